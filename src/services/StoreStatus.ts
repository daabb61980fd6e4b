/**
 * How a node's store is doing, for `node/info` and `alknet status`. Only backends that can lose their connection
 * while the node runs provide it (PostgreSQL); a node without it reports nothing about its store.
 *
 * While a store is `disconnected` it keeps serving reads from its last good in-memory index; writes fail with
 * `StoreError` `Backend` until it is back.
 */
import { Context, Schema } from "effect"
import type { Effect } from "effect"

export const Status = Schema.Struct({
  /** The backend, e.g. `postgres`. */
  type: Schema.String,
  /** Where it is, without credentials (e.g. `127.0.0.1:5432/alknet`). */
  target: Schema.String,
  state: Schema.Literal("connected", "disconnected"),
  /** Epoch ms of the last state change. */
  since: Schema.Number,
  /** Why it is disconnected (the last connection error), or null. */
  last_error: Schema.NullOr(Schema.String)
}).annotations({ identifier: "StoreStatus" })
export type Status = typeof Status.Type

export class StoreStatus extends Context.Tag("alknet/StoreStatus")<StoreStatus, {
  /** The current state. */
  readonly current: Effect.Effect<Status>
}>() {}
