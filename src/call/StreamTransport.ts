/**
 * The call transport over a stream-multiplexed `Endpoint.Connection` (QUIC): one exchange = one bidirectional
 * stream, envelopes framed by the codec (4-byte big-endian length + UTF-8 JSON, SPEC §4).
 *
 * A stream whose bytes are not valid frames (zero or oversize length, bad UTF-8 or JSON, not an envelope, EOF inside
 * a frame) is reset and its `receive` fails with `InvalidFrame`; the connection and its other streams carry on.
 */
import { Chunk, Effect, Option, Stream } from "effect"
import * as TransportError from "../errors/TransportError.js"
import type { EventEnvelope } from "../schema/Envelope.js"
import type { BidiStream, Connection } from "../services/Endpoint.js"
import * as Codec from "./Codec.js"
import type { CallTransport, Exchange } from "./Transport.js"

export interface Options {
  /** Largest frame body accepted and sent, in bytes (default 64 MiB). */
  readonly maxFrameBytes?: number
}

const invalidFrame = (error: unknown) =>
  new TransportError.TransportError({
    reason: "InvalidFrame",
    message: error instanceof Error ? error.message : String(error)
  })

/** The envelopes of one byte stream, decoded incrementally; an invalid frame resets the stream. */
const envelopes = (stream: BidiStream, maxFrameBytes: number): Stream.Stream<EventEnvelope, TransportError.TransportError> =>
  Stream.suspend(() => {
    const decoder = new Codec.FrameDecoder(maxFrameBytes)
    let done = false
    const pull: Effect.Effect<Chunk.Chunk<EventEnvelope>, Option.Option<TransportError.TransportError>> = Effect.suspend(
      () =>
        done ? Effect.fail(Option.none()) : Effect.matchEffect(stream.read, {
          onFailure: (error) => Effect.fail(Option.some(error)),
          onSuccess: (chunk) => {
            try {
              if (Option.isSome(chunk)) return Effect.succeed(Chunk.unsafeFromArray(decoder.push(chunk.value)))
              done = true
              decoder.end()
              return Effect.succeed(Chunk.empty())
            } catch (e) {
              return Effect.zipRight(stream.reset, Effect.fail(Option.some(invalidFrame(e))))
            }
          }
        })
    )
    return Stream.repeatEffectChunkOption(pull)
  })

/** One bidirectional stream as an exchange. */
export const exchange = (stream: BidiStream, maxFrameBytes: number = Codec.DEFAULT_MAX_FRAME_BYTES): Exchange => ({
  receive: envelopes(stream, maxFrameBytes),
  send: (envelope) =>
    Effect.suspend(() => {
      let frame: Uint8Array
      try {
        frame = Codec.encodeFrame(envelope, maxFrameBytes)
      } catch (e) {
        return Effect.fail(invalidFrame(e))
      }
      return stream.write(frame)
    }),
  end: stream.end,
  close: stream.reset
})

/** A connection's streams as a call transport. */
export const make = (connection: Connection, options: Options = {}): CallTransport => {
  const maxFrameBytes = options.maxFrameBytes ?? Codec.DEFAULT_MAX_FRAME_BYTES
  return {
    open: Effect.map(connection.openBidi, (stream) => exchange(stream, maxFrameBytes)),
    accept: Stream.repeatEffectOption(
      Effect.mapBoth(connection.acceptBidi, {
        onFailure: () => Option.none(),
        onSuccess: (stream) => exchange(stream, maxFrameBytes)
      })
    ),
    close: connection.close()
  }
}
