/**
 * The stores a node's config names (`store`): SQLite in its `data_dir` (default) or a shared PostgreSQL database.
 * Each backend's modules load only when its store is built, so a command that never opens a store loads neither.
 */
import { Config, Effect, Layer, Redacted } from "effect"
import { StoreError } from "../errors/StoreError.js"
import type { StaticConfig } from "../schema/Config.js"
import type * as CredentialStore from "../services/CredentialStore.js"
import type * as IdentityProvider from "../services/IdentityProvider.js"
import type * as IdentityStore from "../services/IdentityStore.js"
import * as StoreStatus from "../services/StoreStatus.js"
import * as NodeHome from "./NodeHome.js"

export type Provided =
  | IdentityStore.IdentityStore
  | IdentityProvider.IdentityProvider
  | CredentialStore.CredentialStore
  | StoreStatus.StoreStatus

/** The password named by `password_env`, if the config names one; a missing variable is an error. */
const password = (name: string | undefined) =>
  name === undefined
    ? Effect.succeed({})
    : Effect.map(Config.redacted(name), (value) => ({ password: value })).pipe(
      Effect.mapError(() =>
        new StoreError({
          reason: "Backend",
          message: `postgres: the environment variable ${name} (store.password_env) is not set`
        })
      )
    )

/** Open the configured store (creating and migrating it if needed). */
export const layer = (config: Pick<StaticConfig, "data_dir" | "store">): Layer.Layer<Provided, StoreError> =>
  Layer.unwrapEffect(Effect.gen(function*() {
    const store = config.store
    if (store.type === "postgres") {
      const PgStore = yield* Effect.promise(() => import("./pg/PgStore.js"))
      return PgStore.layer({ url: Redacted.make(store.url), ...(yield* password(store.password_env)) })
    }
    const SqliteStore = yield* Effect.promise(() => import("./sqlite/SqliteStore.js"))
    const filename = NodeHome.databasePath(config.data_dir)
    // A file on this machine: always there while the node runs.
    const status = Layer.sync(StoreStatus.StoreStatus, () => {
      const since = Date.now()
      return StoreStatus.StoreStatus.of({
        current: Effect.succeed({ type: "sqlite", target: filename, state: "connected", since, last_error: null })
      })
    })
    return Layer.merge(SqliteStore.layer({ filename }), status)
  }))
