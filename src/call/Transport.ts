/**
 * The transport seam: what a transport provides so the call engine (`Connection.ts`) runs unchanged over QUIC,
 * WebSocket or the in-memory pair. **The transport pushes, the engine routes.**
 *
 * - `run(receiver)`: the transport decodes what the peer sends and hands every envelope to `receiver.receive`,
 *   synchronously, with the `Channel` it came on (QUIC: the stream; WebSocket: the socket). The engine correlates by
 *   envelope `id` only (SPEC §4) and answers a request on the channel it came on.
 * - Backpressure: `receive` returns `undefined` to keep reading, or an Effect (a subscription's mailbox is full):
 *   the transport stops reading that channel (QUIC: that stream; WebSocket: it pauses the socket) until the Effect
 *   completes, so the peer's flow control slows the producer. Nothing is dropped or buffered without bound: what a
 *   transport delivers beyond the mailbox's capacity is at most one read (QUIC) or one message (WebSocket).
 * - `open`: a channel for a new outgoing call (QUIC: a new bidirectional stream, read by the transport like the
 *   accepted ones; WebSocket: the socket itself).
 *
 * Stream transports (`perCall`: one channel per call, SPEC §4):
 * - the caller opens a channel and writes `call.requested`; the callee answers on it and `close`s it after the final
 *   answer; the caller `close`s its own channel as soon as the final answer arrived, **without waiting for the
 *   peer's FIN** (QUIC can lose one). `close` = finish our writing side and stop reading (FIN + STOP_SENDING). A
 *   query's or mutation's request finishes the caller's side at once (`writeLast`); a later `call.aborted` then goes
 *   out on a new stream, which the callee routes by id like any envelope. A subscription's stream stays open for it.
 * - `receiver.ended(channel, error)` says a channel ended: `undefined` when the peer finished its side normally, a
 *   `TransportError` when it was reset or sent an invalid frame (the transport has reset it; other channels and the
 *   connection carry on). The engine interrupts the requests that came on a failed channel and fails the calls
 *   waiting on one.
 *
 * Contract:
 * 1. `write` sends the envelopes in order as one transport write (QUIC: one stream write of all their frames;
 *    WebSocket: the messages corked into one socket write), never interleaved with another write on the channel. It
 *    resolves once the transport accepted the bytes (it waits while the peer's window / the socket's buffer is full)
 *    and fails with `TransportError`: `Closed` / `Reset` once the channel or connection is gone, `InvalidFrame` when
 *    an envelope cannot be encoded (then nothing was written and the channel stays usable).
 * 2. `close` / `reset` are idempotent and never fail; on a WebSocket (one channel for everything) they do nothing.
 * 3. `run` returns when the connection has closed (by either side); every channel's `write` fails from then on.
 *    `open` fails with `Closed` once the connection is closed.
 * 4. `close` on the transport closes the whole connection; idempotent. `closeNow` cuts it without a graceful drain.
 */
import type { Effect } from "effect"
import type { TransportError } from "../errors/TransportError.js"
import type { EventEnvelope } from "../schema/Envelope.js"

/** Where envelopes come from and go to: a QUIC stream, or the WebSocket. */
export interface Channel {
  /** Write envelopes, in order, as one transport write; resolves when the transport accepted them (backpressure). */
  readonly write: (envelopes: ReadonlyArray<EventEnvelope>) => Effect.Effect<void, TransportError>
  /**
   * Optional (stream transports): `write`, then finish our writing side with the same write (QUIC: the FIN leaves with
   * the frames). What is written on the channel afterwards (`call.aborted`) goes out on a new stream; if these
   * envelopes had not left whole by then, the stream is reset instead. The engine uses it for a query's or mutation's
   * request; without it, `write`.
   */
  readonly writeLast?: (envelopes: ReadonlyArray<EventEnvelope>) => Effect.Effect<void, TransportError>
  /**
   * Write envelopes without waiting (a refusal the engine answers at once, before any fiber runs): best effort, a
   * failure is dropped. The reading side of the transport holds back while too much is queued for the peer.
   */
  readonly post: (envelopes: ReadonlyArray<EventEnvelope>) => void
  /** Done with this channel: finish our side and stop reading it. Idempotent; a no-op on a WebSocket. */
  readonly close: () => void
  /** Abandon the channel: reset both directions. Idempotent; a no-op on a WebSocket. */
  readonly reset: () => void
}

/** What the engine gives the transport to push into. */
export interface Receiver {
  /** One envelope the peer sent, on `channel`; an Effect in return pauses reading until it completes. */
  readonly receive: (envelope: EventEnvelope, channel: Channel) => Effect.Effect<void> | undefined
  /** A channel ended: `error` undefined = the peer finished it; else it was reset or carried an invalid frame. */
  readonly ended: (channel: Channel, error: TransportError | undefined) => void
  /** Nothing is in flight (no request served, no call waiting): a draining transport may close now. */
  readonly idle: () => boolean
}

/** A connection as the call engine sees it. */
export interface CallTransport {
  /** `true`: one channel per call (QUIC streams, the in-memory pair); `false`: one channel for all (WebSocket). */
  readonly perCall: boolean
  /** Push everything the peer sends to `receiver` until the connection closes. Run once. */
  readonly run: (receiver: Receiver) => Effect.Effect<void>
  /** A channel for a new outgoing call. */
  readonly open: Effect.Effect<Channel, TransportError>
  /** Close the whole connection. Idempotent. */
  readonly close: Effect.Effect<void>
}
