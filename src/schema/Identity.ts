/**
 * Who is calling: the resolved identity of a connection or of one request (SPEC §10).
 *
 * `resources` maps a resource type to the actions granted on it, e.g. `{ "container": ["exec", "read"] }`.
 */
import { Option, Schema } from "effect"

export const Identity = Schema.Struct({
  id: Schema.String,
  scopes: Schema.Array(Schema.String),
  resources: Schema.Record({ key: Schema.String, value: Schema.Array(Schema.String) })
})
export type Identity = typeof Identity.Type

/** Build an identity; scopes and resources default to empty. */
export const make = (
  id: string,
  options: { readonly scopes?: ReadonlyArray<string>; readonly resources?: Record<string, ReadonlyArray<string>> } = {}
): Identity => ({ id, scopes: options.scopes ?? [], resources: options.resources ?? {} })

/**
 * The scope that lets a caller see a node's internals: `node/info` with its transports and outbound peers (addresses,
 * states, last errors) and, in `services/list-peers`, every operation of every peer. Without it a caller sees only
 * what it could call. A node grants it to its own key (the CLI run with the node's `--home`), and to any peer or API
 * key whose `scopes` list it.
 */
export const ADMIN_SCOPE = "alknet:admin"

/** Whether the identity holds `ADMIN_SCOPE`. */
export const isAdmin = (identity: Option.Option<Identity>): boolean =>
  Option.isSome(identity) && identity.value.scopes.includes(ADMIN_SCOPE)
