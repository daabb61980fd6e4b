/**
 * Who is calling: the resolved identity of a connection or of one request (SPEC §10).
 *
 * `resources` maps a resource type to the actions granted on it, e.g. `{ "container": ["exec", "read"] }`.
 */
import { Schema } from "effect"

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
