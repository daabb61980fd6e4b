/**
 * The transport seam: what a transport must provide so the call engine runs unchanged over QUIC, WebSocket or the
 * in-memory pair.
 *
 * The engine sees a connection as a set of **exchanges**. An exchange is a bidirectional, ordered channel of
 * envelopes between the two ends:
 *
 * - QUIC: one exchange = one bidirectional stream. `open` opens a new stream; `accept` yields the streams the peer
 *   opened. Frames are `Codec.encodeFrame` / `Codec.FrameDecoder` (4-byte big-endian length + UTF-8 JSON).
 * - WebSocket (one envelope per binary message, no streams): the transport demultiplexes messages by envelope `id`
 *   into virtual exchanges: a `call.requested` with an id that has no open exchange starts a new accepted exchange;
 *   every other message goes to the open exchange of its id; a message whose id has no open exchange (a late
 *   `call.aborted`, an answer to a call that is gone) is delivered on a fresh accepted exchange that then ends at once
 *   (there is no FIN on a WebSocket: without that end the engine would keep reading it until the socket closes).
 *   `open` creates a virtual exchange whose sends go straight to the socket (`Codec.encodeEnvelope`, no prefix);
 *   `end` has no wire meaning, and `close` forgets the id.
 *
 * The engine never relies on *which* exchange an envelope arrives on: it correlates every envelope by `id` (SPEC §4).
 * `call.requested` is dispatched and answered on the exchange it arrived on; `call.aborted` interrupts request `id`
 * wherever it runs (QUIC peers may send it on a new stream); `call.responded` / `call.error` / `call.completed` go
 * to the pending outbound call with that id, and unknown ids are ignored.
 *
 * How the engine uses an exchange (one call per exchange, SPEC §4):
 *
 * - caller: `open` → `send(call.requested)` → read `receive` until the final answer (`call.responded` for a
 *   query/mutation, `call.completed` or `call.error` for a subscription) → `end` → `close`. If the call is
 *   interrupted, times out, or its consumer stops first, it sends `call.aborted` on the same exchange before `end`.
 * - callee: reads every accepted exchange in its own fiber; each `call.requested` is served in its own fiber and
 *   answered on that exchange; after the last answer the callee `end`s and `close`s it without waiting for the
 *   caller's end. If `receive` fails (reset, invalid frame, connection lost) the requests of that exchange are
 *   interrupted.
 *
 * Contract an implementation must keep:
 *
 * 1. `receive` may be run once. It pulls from the network only when the engine pulls (so a slow consumer stops
 *    reading and transport flow control slows the sender: never drop, never buffer without bound). It ends when the
 *    peer finishes its writing side, and fails with `TransportError` when the exchange is reset, the connection is
 *    closed or lost (`Closed`), or the peer sends an invalid frame (`InvalidFrame`; the transport then resets that
 *    exchange and keeps the connection).
 * 2. `send` resolves once the transport accepted the envelope's bytes (it waits while the peer's window / the
 *    socket's buffer is full) and fails with `TransportError` once the exchange or connection is gone, or with
 *    `InvalidFrame` when the envelope cannot be encoded (nothing was written; the exchange stays usable). Each send is
 *    atomic: one envelope's bytes are never interleaved with another send's (QUIC: one `write` per frame; the engine
 *    sends concurrently on one exchange only if a peer multiplexes several requests on it).
 * 3. `end` finishes our writing side gracefully (QUIC: close the writable; the peer's `receive` ends after it has
 *    read everything). Idempotent, never fails.
 * 4. `close` releases the exchange in both directions (QUIC: cancel the readable if it has not ended and reset the
 *    writable if it has not been ended). Idempotent, never fails. The engine calls it exactly when it is done with
 *    an exchange, after `end` on a normal finish.
 * 5. `open` fails with `TransportError` (`Closed`) once the connection is closed. `accept` ends (or fails) when the
 *    connection closes; the engine treats the end of `accept` as the end of the connection.
 * 6. When the connection closes (`close`, or lost), every exchange's `receive` ends or fails promptly and every
 *    `send` fails: the engine fails pending calls with INTERNAL "connection closed" and interrupts in-flight ones.
 * 7. `close` closes the whole connection; idempotent.
 */
import type { Effect, Stream } from "effect"
import type { TransportError } from "../errors/TransportError.js"
import type { EventEnvelope } from "../schema/Envelope.js"

/** One bidirectional channel of envelopes (a QUIC bidirectional stream, a virtual WebSocket exchange). */
export interface Exchange {
  /** The envelopes the peer writes on this exchange, pulled on demand; ends at the peer's end of stream. */
  readonly receive: Stream.Stream<EventEnvelope, TransportError>
  /** Write one envelope; resolves when the transport accepted its bytes (backpressure). */
  readonly send: (envelope: EventEnvelope) => Effect.Effect<void, TransportError>
  /** Finish our writing side gracefully. Idempotent. */
  readonly end: Effect.Effect<void>
  /** Release the exchange in both directions (reset what was not finished). Idempotent. */
  readonly close: Effect.Effect<void>
}

/** A connection as the call engine sees it. */
export interface CallTransport {
  /** Open a new exchange to the peer (QUIC: a new bidirectional stream). */
  readonly open: Effect.Effect<Exchange, TransportError>
  /** The exchanges the peer opens, in order; ends when the connection closes. Run once. */
  readonly accept: Stream.Stream<Exchange, TransportError>
  /** Close the whole connection. Idempotent. */
  readonly close: Effect.Effect<void>
}
