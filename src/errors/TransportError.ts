/**
 * What a call transport reports when an exchange or the whole connection fails (see `call/Transport.ts`).
 *
 * - `Closed`: the connection is gone (closed by either side or lost); nothing more can be sent or received.
 * - `Reset`: the peer abandoned this one exchange (QUIC RESET_STREAM / STOP_SENDING, a closed virtual exchange).
 * - `InvalidFrame`: the peer sent bytes that are not a valid frame or envelope (zero or oversize length, bad UTF-8,
 *   bad JSON, wrong envelope shape, EOF inside a frame); the exchange is closed and the node keeps serving.
 * - `Io`: any other failure of the underlying transport, with a readable message.
 */
import { Data } from "effect"

export type TransportErrorReason = "Closed" | "Reset" | "InvalidFrame" | "Io"

export class TransportError extends Data.TaggedError("TransportError")<{
  readonly reason: TransportErrorReason
  readonly message: string
}> {}

export const closed = (message = "connection closed"): TransportError => new TransportError({ reason: "Closed", message })
export const reset = (message = "stream reset by peer"): TransportError => new TransportError({ reason: "Reset", message })
/** `InvalidFrame`, with the message of what failed to encode or decode (a `CodecError`, or anything thrown). */
export const invalidFrame = (error: unknown): TransportError =>
  new TransportError({ reason: "InvalidFrame", message: error instanceof Error ? error.message : String(error) })
