/**
 * Failures of the identity and credential stores (SPEC §13).
 *
 * - `Backend`: the storage failed (I/O, a locked or corrupt database, a database server out of reach). The message
 *   names the operation and the code — SQLite's result code (`SQLITE_BUSY`), PostgreSQL's SQLSTATE or the socket's
 *   (`ECONNREFUSED`) — never SQL text, row contents or secrets.
 * - `NotFound`: update or removal of an entry that does not exist.
 * - `Serialization`: stored data that does not decode (a row another tool wrote by hand, say). The message names
 *   the entry and the field.
 */
import { Schema } from "effect"

export class StoreError extends Schema.TaggedError<StoreError>()("StoreError", {
  reason: Schema.Literal("Backend", "NotFound", "Serialization"),
  message: Schema.String
}) {}

export const notFound = (what: string, key: string): StoreError =>
  new StoreError({ reason: "NotFound", message: `${what} not found: ${key}` })
