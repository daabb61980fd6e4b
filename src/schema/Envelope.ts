/**
 * The call protocol's wire data (SPEC §4): one `EventEnvelope` per frame, `{"type","id","payload"}`.
 *
 * These schemas are the contract and are used to validate payloads off the wire; the frame codec's hot path checks
 * the envelope shape by hand (see `call/Codec.ts`) and the engine validates each payload with the checks below.
 */
import { Schema } from "effect"
import { Identity } from "./Identity.js"

/** The five event types of the call protocol. */
export const EventType = Schema.Literal("call.requested", "call.responded", "call.completed", "call.aborted", "call.error")
export type EventType = typeof EventType.Type

/** Any envelope: `payload` is always a JSON object. Unknown `type`s are tolerated on the wire and ignored. */
export const EventEnvelope = Schema.Struct({
  type: Schema.String,
  id: Schema.String,
  payload: Schema.Record({ key: Schema.String, value: Schema.Unknown })
}).annotations({ identifier: "EventEnvelope" })
export interface EventEnvelope {
  readonly type: string
  readonly id: string
  readonly payload: { readonly [key: string]: unknown }
}

/**
 * `call.requested`: `operationId` may carry a leading slash (the wire form) or not; a missing `input` is `null`.
 *
 * `timeout_ms` is an alknet extension (a reference peer ignores it): the caller's remaining time, so a forwarded call
 * keeps its parent's deadline instead of getting a fresh default (SPEC §8).
 */
export const CallRequested = Schema.Struct({
  operationId: Schema.String,
  input: Schema.optional(Schema.Unknown),
  auth_token: Schema.optional(Schema.String),
  forwarded_for: Schema.optional(Identity),
  timeout_ms: Schema.optional(Schema.NonNegativeInt)
}).annotations({ identifier: "CallRequested" })
export type CallRequested = typeof CallRequested.Type

/** `call.responded`: once for a query/mutation, once per item for a subscription. */
export const CallResponded = Schema.Struct({ output: Schema.Unknown }).annotations({ identifier: "CallResponded" })
export type CallResponded = typeof CallResponded.Type

/** `call.completed`: a subscription ended normally. */
export const CallCompleted = Schema.Struct({}).annotations({ identifier: "CallCompleted" })

/** `call.aborted`: cancel request `id` and everything it started. */
export const CallAborted = Schema.Struct({}).annotations({ identifier: "CallAborted" })

/** `call.error`: `details` is omitted when absent (never `null` or `undefined` on the wire). */
export const CallErrorPayload = Schema.Struct({
  code: Schema.String,
  message: Schema.String,
  retryable: Schema.Boolean,
  details: Schema.optional(Schema.Unknown)
}).annotations({ identifier: "CallErrorPayload" })
export type CallErrorPayload = typeof CallErrorPayload.Type

/** Build an envelope. */
export const make = (type: EventType, id: string, payload: { readonly [key: string]: unknown }): EventEnvelope => ({
  type,
  id,
  payload
})
