/**
 * The call transport over a stream-multiplexed `Endpoint.Connection` (QUIC, the in-memory pair): one channel = one
 * bidirectional stream, envelopes framed by the codec (4-byte big-endian length + UTF-8 JSON, SPEC §4).
 *
 * Each stream is read by one loop that decodes frames synchronously and pushes the envelopes into the engine; when
 * the engine asks it to wait (a full subscription mailbox) the loop stops reading that stream, so the peer's stream
 * window fills and its writer waits. A write of several envelopes (a chunk of subscription items) is one stream
 * write of all their frames.
 *
 * A stream whose bytes are not valid frames (zero or oversize length, bad UTF-8 or JSON, not an envelope, EOF inside
 * a frame) is reset and reported as ended with `InvalidFrame`; the connection and its other streams carry on.
 */
import { Deferred, Effect, FiberId, FiberSet, Option } from "effect"
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

export const invalidFrame = (error: unknown): TransportError.TransportError =>
  new TransportError.TransportError({
    reason: "InvalidFrame",
    message: error instanceof Error ? error.message : String(error)
  })

/** Encode envelopes as consecutive frames in one buffer. Throws `CodecError`. */
export const encodeFrames = (envelopes: ReadonlyArray<EventEnvelope>, maxFrameBytes: number): Uint8Array => {
  if (envelopes.length === 1) return Codec.encodeFrame(envelopes[0]!, maxFrameBytes)
  const frames: Array<Uint8Array> = []
  for (const envelope of envelopes) frames.push(Codec.encodeFrame(envelope, maxFrameBytes))
  return Buffer.concat(frames)
}

type Fork = (effect: Effect.Effect<void>) => Fiber.RuntimeFiber<void, never>

class StreamChannel implements Channel {
  /** The engine is done with it (closed or reset): nothing more is reported. */
  done = false

  constructor(
    readonly stream: BidiStream,
    private readonly fork: Fork,
    private readonly maxFrameBytes: number
  ) {}

  write = (envelopes: ReadonlyArray<EventEnvelope>): Effect.Effect<void, TransportError.TransportError> => {
    let bytes: Uint8Array
    try {
      bytes = encodeFrames(envelopes, this.maxFrameBytes)
    } catch (e) {
      return Effect.fail(invalidFrame(e))
    }
    return this.stream.write(bytes)
  }

  post = (envelopes: ReadonlyArray<EventEnvelope>): void => {
    this.fork(Effect.ignore(this.write(envelopes)))
  }

  close = (): void => {
    if (this.done) return
    this.done = true
    // FIN our side, and stop reading without waiting for the peer's FIN (it may never come).
    this.fork(this.stream.end)
    this.fork(this.stream.reset)
  }

  reset = (): void => {
    if (this.done) return
    this.done = true
    this.fork(this.stream.reset)
  }
}

/** A connection's streams as a call transport. */
export const make = (connection: Connection, options: Options = {}): CallTransport => {
  const maxFrameBytes = options.maxFrameBytes ?? Codec.DEFAULT_MAX_FRAME_BYTES
  let fork: Fork | undefined
  let receiver: Receiver | undefined
  /** Outgoing streams need the read loops `run` sets up: `open` waits for it. */
  const running = Deferred.unsafeMake<void>(FiberId.none)

  /** Read one stream until it ends, pushing its envelopes to the engine. */
  const read = (channel: StreamChannel): Effect.Effect<void> => {
    const decoder = new Codec.FrameDecoder(maxFrameBytes)
    const ended = (error: TransportError.TransportError | undefined) => {
      if (channel.done) return Effect.void
      if (error !== undefined && error.reason === "InvalidFrame") channel.reset()
      receiver!.ended(channel, error)
      return Effect.void
    }
    const loop: Effect.Effect<void> = Effect.matchEffect(channel.stream.read, {
      onFailure: ended,
      onSuccess: (chunk) => {
        if (channel.done) return Effect.void
        let envelopes: Array<EventEnvelope>
        try {
          if (Option.isNone(chunk)) {
            decoder.end()
            return ended(undefined)
          }
          envelopes = decoder.push(chunk.value)
        } catch (e) {
          return ended(invalidFrame(e))
        }
        let wait: Effect.Effect<void> | undefined
        for (let i = 0; i < envelopes.length; i++) {
          const paused = receiver!.receive(envelopes[i]!, channel)
          if (paused !== undefined) wait = paused
        }
        return wait === undefined ? loop : Effect.zipRight(wait, loop)
      }
    })
    return loop
  }

  const start = (stream: BidiStream): StreamChannel => {
    const channel = new StreamChannel(stream, fork!, maxFrameBytes)
    fork!(read(channel))
    return channel
  }

  return {
    perCall: true,
    run: (to) =>
      Effect.scoped(Effect.gen(function*() {
        receiver = to
        fork = yield* FiberSet.makeRuntime<never, void, never>()
        yield* Deferred.succeed(running, undefined)
        const accept: Effect.Effect<void> = Effect.matchEffect(connection.acceptBidi, {
          onFailure: () => Effect.void,
          onSuccess: (stream) => {
            start(stream)
            return accept
          }
        })
        yield* accept
      })),
    open: Effect.suspend(() =>
      fork === undefined
        ? Effect.zipRight(Deferred.await(running), Effect.map(connection.openBidi, start))
        : Effect.map(connection.openBidi, start)
    ),
    close: connection.close()
  }
}
