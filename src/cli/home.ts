/**
 * Using a node's home from a CLI command: its config, its stores (SQLite or PostgreSQL, shared with the nodes using
 * them, which pick up every write within milliseconds) and its vault.
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Effect, Layer, Option } from "effect"
import type { Redacted } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import * as ConfigFile from "../layers/ConfigFile.js"
import * as NodeHome from "../layers/NodeHome.js"
import * as CredentialStore from "../services/CredentialStore.js"
import * as IdentityStore from "../services/IdentityStore.js"
import * as Vault from "../services/Vault.js"
import type { CliError } from "./errors.js"
import * as Io from "./io.js"

/** The home's config (relative paths resolved), after checking it is a home. */
export const config = (home: string) =>
  Effect.zipRight(NodeHome.requireHome(home), ConfigFile.load(NodeHome.configPath(home)))

/**
 * The home's stores: `IdentityStore`, `IdentityProvider` and `CredentialStore`, on its SQLite database or the
 * PostgreSQL database its config names.
 */
export const stores = (home: string) =>
  Layer.unwrapEffect(
    Effect.zipWith(
      config(home),
      // The store stack loads only for the commands that use a home's stores.
      Effect.promise(() => import("../layers/Stores.js")),
      (c, Stores) => Stores.layer(c)
    )
  )

/** Run `f` with the home's identity store (peers, API keys). */
export const withIdentityStore = <A, E>(
  home: string,
  f: (store: IdentityStore.Service) => Effect.Effect<A, E, IdentityStore.IdentityStore>
) => Effect.flatMap(IdentityStore.IdentityStore, f).pipe(Effect.provide(stores(home)))

/** Run `f` with the home's credential store. */
export const withCredentialStore = <A, E>(home: string, f: (store: CredentialStore.Service) => Effect.Effect<A, E>) =>
  Effect.flatMap(CredentialStore.CredentialStore, f).pipe(Effect.provide(stores(home)))

const exists = (file: string) => Effect.promise(() => fs.access(file).then(() => true, () => false))

/**
 * The mnemonic the home does not keep (`init --no-store-mnemonic`): the first line of stdin. `None` when the home
 * has its mnemonic file.
 */
export const mnemonicFromStdin = (home: string): Effect.Effect<Option.Option<Redacted.Redacted<string>>, CliError> =>
  Effect.flatMap(exists(NodeHome.mnemonicPath(home)), (found) =>
    found
      ? Effect.succeedNone
      : Effect.asSome(
        Io.readLine(
          `the mnemonic (${path.resolve(home)} keeps none)`,
          `${path.resolve(home)} keeps no mnemonic: enter it (one line)`,
          "BadMnemonic"
        )
      ))

/** The home's vault, unlocked from its mnemonic file or, when it keeps none, from the first line of stdin. */
export const vault = (home: string) =>
  Layer.effectDiscard(
    Effect.gen(function*() {
      yield* NodeHome.requireHome(home)
      const given = yield* mnemonicFromStdin(home)
      if (Option.isSome(given)) return yield* Effect.flatMap(Vault.Vault, (v) => v.unlock(given.value))
      yield* Vault.unlockFromFile(NodeHome.mnemonicPath(home)).pipe(Effect.provide(NodeFileSystem.layer))
    })
  ).pipe(Layer.provideMerge(Vault.layer))
