/**
 * The call transport over a stream-multiplexed `Endpoint.Connection` (QUIC, the in-memory pair): one channel = one
 * bidirectional stream, envelopes framed by the codec (4-byte big-endian length + UTF-8 JSON, SPEC §4).
 *
 * Reading runs where the bytes arrive, with no fiber per stream (as on the WebSocket): a stream that has something
 * calls back (`BidiStream.onReadable`), its frames are decoded synchronously and pushed into the engine; when the
 * engine asks to wait (a full subscription mailbox) that stream is not read until it may go on, so the peer's stream
 * window fills and its writer waits. A write of several envelopes (a chunk of subscription items) is one stream write
 * of all their frames, encoded into one buffer.
 *
 * A query's or mutation's request finishes the caller's side (`writeLast`): its FIN leaves with the request (one
 * datagram for a small call), and a later `call.aborted` goes on a new stream (SPEC §4: correlation is by id); a
 * request that had not left whole when the abort came is abandoned by resetting its stream instead. A subscription's
 * stream stays open, and its abort follows the request on it.
 *
 * A stream whose bytes are not valid frames (zero or oversize length, bad UTF-8 or JSON, not an envelope, EOF inside
 * a frame) is reset and reported as ended with `InvalidFrame`; the connection and its other streams carry on.
 */
import { Deferred, Duration, Effect, FiberId, FiberSet } from "effect"
import type { Clock } from "effect"
import type { Fiber } from "effect"
import * as TransportError from "../errors/TransportError.js"
import type { EventEnvelope } from "../schema/Envelope.js"
import type { BidiStream, Connection } from "../services/Endpoint.js"
import * as Codec from "./Codec.js"
import type { CallTransport, Channel, Receiver } from "./Transport.js"

export interface Options {
  /** Largest frame body accepted and sent, in bytes (default 64 MiB). */
  readonly maxFrameBytes?: number
}

/** The closed streams still waiting for the peer's FIN; the first one added starts the sweep. */
class LingerSet extends Set<StreamChannel> {
  constructor(private readonly started: () => void) {
    super()
  }

  override add(channel: StreamChannel): this {
    super.add(channel)
    this.started()
    return this
  }
}

type Fork = (effect: Effect.Effect<void>) => Fiber.RuntimeFiber<void, never>

const FINISHED = TransportError.closed("stream already finished")

/** How long a closed stream may wait for the peer's FIN before it is reset (the FIN may never come). */
const LINGER_MS = 2000

/** Its operations are prototype methods: a channel per call allocates no closures beyond `wake`. */
class StreamChannel implements Channel {
  /** The engine is done with it (closed or reset): nothing more is reported. */
  done = false
  /** The peer finished its side (or the stream failed): nothing more to read. */
  readEnded = false
  /** Our writing side is finished (FIN sent or sending). */
  writeEnded = false
  /** After `writeLast`: `writing` until the transport took all of it (and stays so if it failed), then `sent`. */
  last: "none" | "writing" | "sent" = "none"
  /** When the engine closed it while the peer had not finished yet. */
  closedAt = 0
  /** Frames split across reads. */
  readonly decoder: Codec.FrameDecoder
  /** Read on (set by the transport): the stream has something, or the engine may take more. */
  wake: () => void = () => undefined

  constructor(
    readonly stream: BidiStream,
    private readonly fork: Fork,
    private readonly maxFrameBytes: number,
    private readonly lingering: LingerSet,
    private readonly now: () => number,
    /** Set on channels we opened: opens another one (for an envelope sent after `writeLast`). */
    private readonly reopen: Effect.Effect<StreamChannel, TransportError.TransportError> | undefined
  ) {
    this.decoder = new Codec.FrameDecoder(maxFrameBytes)
  }

  /** The frames of `envelopes` in one buffer, or why they cannot be sent (then nothing is written). */
  private encode(envelopes: ReadonlyArray<EventEnvelope>): Uint8Array | TransportError.TransportError {
    try {
      return Codec.encodeFrames(envelopes, this.maxFrameBytes)
    } catch (e) {
      return TransportError.invalidFrame(e)
    }
  }

  write(envelopes: ReadonlyArray<EventEnvelope>): Effect.Effect<void, TransportError.TransportError> {
    if (this.last !== "none") return this.writeAfterLast(envelopes)
    const bytes = this.encode(envelopes)
    return bytes instanceof Uint8Array ? this.stream.write(bytes) : Effect.fail(bytes)
  }

  /** A query's request: its FIN leaves with it (one datagram), and the callee's stream is complete once it answered. */
  writeLast(envelopes: ReadonlyArray<EventEnvelope>): Effect.Effect<void, TransportError.TransportError> {
    if (this.last !== "none" || this.writeEnded) return this.write(envelopes)
    const bytes = this.encode(envelopes)
    if (!(bytes instanceof Uint8Array)) return Effect.fail(bytes)
    this.last = "writing"
    this.writeEnded = true
    return Effect.zipRight(
      this.stream.write(bytes),
      Effect.suspend(() => {
        this.last = "sent"
        return this.stream.end
      })
    )
  }

  /**
   * What follows a `writeLast` (the caller's `call.aborted`) cannot follow the FIN: it goes on a new stream (SPEC §4:
   * correlation is by id). If the last write did not leave whole (still waiting for window, or cut off), the stream is
   * reset instead, which the callee takes as an abort of what came on it.
   */
  private writeAfterLast(envelopes: ReadonlyArray<EventEnvelope>): Effect.Effect<void, TransportError.TransportError> {
    if (this.last !== "sent") {
      this.reset()
      return Effect.void
    }
    return this.reopen === undefined ? Effect.fail(FINISHED) : Effect.flatMap(this.reopen, (channel) => channel.writeLast(envelopes))
  }

  post(envelopes: ReadonlyArray<EventEnvelope>): void {
    this.fork(Effect.ignore(this.write(envelopes)))
  }

  close(): void {
    if (this.done) return
    this.done = true
    // FIN our side (a caller's went with its request). The peer's FIN normally follows at once (it finishes when it
    // has our answer, or has just sent its own): the read loop takes it and the stream is complete without a
    // STOP_SENDING. Nothing waits for it: the call is already done, and a stream whose FIN does not come within
    // LINGER_MS is reset by the sweep.
    if (!this.writeEnded) {
      this.writeEnded = true
      this.fork(this.stream.end)
    }
    if (!this.readEnded) {
      this.closedAt = this.now()
      this.lingering.add(this)
    }
  }

  reset(): void {
    if (this.done && !this.lingering.has(this)) return
    this.done = true
    this.writeEnded = true
    this.lingering.delete(this)
    this.fork(this.stream.reset)
  }

  /** The read side is over (FIN, reset, or failure). */
  readOver(): void {
    this.readEnded = true
    this.lingering.delete(this)
  }
}

/** A connection's streams as a call transport. */
export const make = (connection: Connection, options: Options = {}): CallTransport => {
  const maxFrameBytes = options.maxFrameBytes ?? Codec.DEFAULT_MAX_FRAME_BYTES
  let fork: Fork | undefined
  let receiver: Receiver | undefined
  /** Outgoing streams need the read loops `run` sets up: `open` waits for it. */
  const running = Deferred.unsafeMake<void>(FiberId.none)

  /**
   * Read what a stream has, now, and push its envelopes to the engine; when it has nothing, ask the stream to call
   * again when it has (no fiber waits per stream: the reading runs where the bytes arrive, as on the WebSocket).
   */
  const pump = (channel: StreamChannel): void => {
    const stream = channel.stream
    for (;;) {
      let chunk: Uint8Array | null | undefined
      try {
        chunk = stream.tryRead()
      } catch (e) {
        return ended(channel, e as TransportError.TransportError)
      }
      if (chunk === undefined) return stream.onReadable(channel.wake)
      if (channel.done) {
        // closed by the engine: read on (discarding) until the peer's FIN completes the stream
        if (chunk === null) return channel.readOver()
        continue
      }
      let envelopes: Array<EventEnvelope>
      try {
        if (chunk === null) {
          channel.decoder.end()
          return ended(channel, undefined)
        }
        envelopes = channel.decoder.push(chunk)
      } catch (e) {
        return ended(channel, TransportError.invalidFrame(e))
      }
      let wait: Effect.Effect<void> | undefined
      for (let i = 0; i < envelopes.length; i++) {
        const paused = receiver!.receive(envelopes[i]!, channel)
        if (paused !== undefined) wait = paused
      }
      // The engine asked to wait (a full subscription mailbox): read no more of this stream until it may go on.
      if (wait !== undefined) return void fork!(wait).addObserver(channel.wake)
    }
  }

  /** The read side of `channel` is over: FIN (`undefined`), reset, or an invalid frame. */
  const ended = (channel: StreamChannel, error: TransportError.TransportError | undefined): void => {
    channel.readOver()
    if (channel.done) {
      // a closed stream the peer reset instead of finishing: release our side too
      if (error !== undefined) fork!(channel.stream.reset)
      return
    }
    if (error !== undefined && error.reason === "InvalidFrame") channel.reset()
    receiver!.ended(channel, error)
  }

  let clock: Clock.Clock | undefined
  const now = () => clock!.unsafeCurrentTimeMillis()
  /** Reset the closed streams whose FIN did not come in time; runs only while some stream lingers. */
  let sweeping = false
  const sweep: Effect.Effect<void> = Effect.suspend(() => {
    const limit = now() - LINGER_MS
    for (const channel of lingering) if (channel.closedAt <= limit) channel.reset()
    if (lingering.size > 0) return Effect.zipRight(Effect.sleep(Duration.millis(LINGER_MS / 2)), sweep)
    sweeping = false
    return Effect.void
  })
  const lingering = new LingerSet(() => {
    if (sweeping || fork === undefined) return
    sweeping = true
    fork(Effect.zipRight(Effect.sleep(Duration.millis(LINGER_MS / 2)), sweep))
  })

  const start = (stream: BidiStream, reopen: typeof open | undefined): StreamChannel => {
    const channel = new StreamChannel(stream, fork!, maxFrameBytes, lingering, now, reopen)
    channel.wake = () => pump(channel)
    pump(channel)
    return channel
  }
  const startOutgoing = (stream: BidiStream) => start(stream, open)
  const open: Effect.Effect<StreamChannel, TransportError.TransportError> = Effect.suspend(() =>
    fork === undefined
      ? Effect.zipRight(Deferred.await(running), Effect.map(connection.openBidi, startOutgoing))
      : Effect.map(connection.openBidi, startOutgoing)
  )

  return {
    perCall: true,
    run: (to) =>
      Effect.scoped(Effect.gen(function*() {
        receiver = to
        fork = yield* FiberSet.makeRuntime<never, void, never>()
        clock = yield* Effect.clock
        yield* Deferred.succeed(running, undefined)
        const accept: Effect.Effect<void> = Effect.matchEffect(connection.acceptBidi, {
          onFailure: () => Effect.void,
          onSuccess: (stream) => {
            start(stream, undefined)
            return accept
          }
        })
        yield* accept
      })),
    open,
    close: connection.close()
  }
}
