/**
 * A real in-memory transport pair: both ends of one connection in one process, for tests, examples and benchmarks.
 *
 * Every envelope goes through the frame codec (`Codec.encodeFrame` on send, `Codec.FrameDecoder` on receive), so
 * the engine is exercised exactly as over QUIC. Each direction of each exchange is a byte pipe bounded by
 * `bufferBytes` (default 64 KiB): `send` waits while the peer has not read enough, which is real backpressure. With
 * `chunkBytes` the bytes are delivered in chunks of at most that size, to exercise incremental decoding.
 *
 * Semantics mirror QUIC streams: `end` is a FIN (the peer drains what was written, then its `receive` ends);
 * `close` on an exchange resets whatever was not finished; closing the connection fails every exchange with
 * `TransportError` (`Closed`) and ends both `accept` streams.
 */
import { Chunk, Effect, Option, Stream } from "effect"
import type { Scope } from "effect"
import * as TransportError from "../errors/TransportError.js"
import type { EventEnvelope } from "../schema/Envelope.js"
import * as Codec from "./Codec.js"
import type { CallTransport, Exchange } from "./Transport.js"

export interface Options {
  /** Bytes one direction of one exchange may hold before `send` waits (default 64 KiB). */
  readonly bufferBytes?: number
  /** Deliver bytes to the reader in chunks of at most this size (default: whole frames). */
  readonly chunkBytes?: number
  /** Maximum frame body accepted by the decoders (default 64 MiB). */
  readonly maxFrameBytes?: number
  /** Exchanges opened but not yet accepted before `open` waits (default 1024, like a QUIC stream limit). */
  readonly maxPendingExchanges?: number
}

/** An in-memory exchange can also write raw bytes (to play a misbehaving peer in tests). */
export interface InMemoryExchange extends Exchange {
  readonly sendBytes: (bytes: Uint8Array) => Effect.Effect<void, TransportError.TransportError>
}

/** One end of the pair, with a count of its exchanges not yet closed (for leak checks). */
export interface InMemoryTransport extends CallTransport {
  readonly open: Effect.Effect<InMemoryExchange, TransportError.TransportError>
  readonly liveExchanges: () => number
}

const END: unique symbol = Symbol("end")

// Errors are immutable values: allocate them once (building an error captures a stack trace, which is costly).
const RESET_BY_PEER = TransportError.reset()
const EXCHANGE_CLOSED = TransportError.reset("exchange closed")
const CONNECTION_CLOSED = TransportError.closed()
const ALREADY_ENDED = TransportError.closed("exchange already ended")

/**
 * A FIFO bounded by total weight, with one failure per side: `failWriter` makes offers fail, `failReader` makes takes
 * fail (dropping what is buffered, like a stream reset). An item heavier than the capacity is accepted when the
 * queue is empty, so a big frame never deadlocks.
 */
class BoundedChannel<A> {
  private items: Array<A> = []
  private used = 0
  private ended = false
  private readerError: TransportError.TransportError | undefined
  private writerError: TransportError.TransportError | undefined
  private reader: (() => void) | undefined
  private writers: Array<() => void> = []

  constructor(private readonly capacity: number, private readonly weigh: (a: A) => number) {}

  offer(item: A): Effect.Effect<void, TransportError.TransportError> {
    return this.offerAll([item])
  }

  /** Offer items as one atomic write: they are buffered together, never interleaved with another write. */
  offerAll(items: Array<A>): Effect.Effect<void, TransportError.TransportError> {
    return Effect.suspend(() => {
      if (this.writerError) return Effect.fail(this.writerError)
      if (this.ended) return Effect.fail(ALREADY_ENDED)
      let weight = 0
      for (const item of items) weight += this.weigh(item)
      if (this.used === 0 || this.used + weight <= this.capacity) {
        this.push(items, weight)
        return Effect.void
      }
      return Effect.async<void, TransportError.TransportError>((resume) => {
        const wake = () => {
          if (this.writerError) return resume(Effect.fail(this.writerError))
          if (this.used === 0 || this.used + weight <= this.capacity) {
            this.push(items, weight)
            return resume(Effect.void)
          }
          this.writers.push(wake)
        }
        this.writers.push(wake)
        return Effect.sync(() => {
          const i = this.writers.indexOf(wake)
          if (i >= 0) this.writers.splice(i, 1)
        })
      })
    })
  }

  /** Everything buffered (waiting for at least one item), or the end. */
  take(): Effect.Effect<Array<A> | typeof END, TransportError.TransportError> {
    return Effect.suspend(() => {
      const now = this.poll()
      if (now !== undefined) return now
      return Effect.async<Array<A> | typeof END, TransportError.TransportError>((resume) => {
        this.reader = () => {
          const next = this.poll()
          if (next !== undefined) {
            this.reader = undefined
            resume(next)
          }
        }
        return Effect.sync(() => {
          this.reader = undefined
        })
      })
    })
  }

  /** No more items; the reader drains what is buffered, then sees the end. */
  end(): void {
    if (this.ended) return
    this.ended = true
    this.reader?.()
  }

  failReader(error: TransportError.TransportError): void {
    if (this.readerError) return
    this.readerError = error
    this.items = []
    this.used = 0
    this.reader?.()
    this.wakeWriters()
  }

  failWriter(error: TransportError.TransportError): void {
    if (this.writerError) return
    this.writerError = error
    this.wakeWriters()
  }

  get isEnded(): boolean {
    return this.ended
  }

  private poll(): Effect.Effect<Array<A> | typeof END, TransportError.TransportError> | undefined {
    if (this.readerError) return Effect.fail(this.readerError)
    if (this.items.length > 0) {
      const items = this.items
      this.items = []
      this.used = 0
      this.wakeWriters()
      return Effect.succeed(items)
    }
    if (this.ended) return Effect.succeed(END)
    return undefined
  }

  private push(items: Array<A>, weight: number): void {
    for (const item of items) this.items.push(item)
    this.used += weight
    this.reader?.()
  }

  private wakeWriters(): void {
    if (this.writers.length === 0) return
    const waiting = this.writers
    this.writers = []
    for (const wake of waiting) wake()
  }
}

interface Side {
  readonly accept: BoundedChannel<Exchange>
  readonly live: Set<ExchangeEnd>
}

class ExchangeEnd implements InMemoryExchange {
  private closed = false
  readonly receive: Stream.Stream<EventEnvelope, TransportError.TransportError>

  constructor(
    private readonly side: Side,
    readonly incoming: BoundedChannel<Uint8Array>,
    readonly outgoing: BoundedChannel<Uint8Array>,
    private readonly options: Required<Omit<Options, "chunkBytes">> & { readonly chunkBytes: number | undefined }
  ) {
    side.live.add(this)
    this.receive = Stream.suspend(() => {
      const decoder = new Codec.FrameDecoder(options.maxFrameBytes)
      const pull: Effect.Effect<Chunk.Chunk<EventEnvelope>, Option.Option<TransportError.TransportError>> = Effect
        .flatMap(
          Effect.mapError(this.incoming.take(), Option.some),
          (chunks) => {
            try {
              if (chunks === END) {
                decoder.end()
                return Effect.fail(Option.none())
              }
              const envelopes = decoder.push(chunks[0]!)
              for (let i = 1; i < chunks.length; i++) {
                const more = decoder.push(chunks[i]!)
                for (const envelope of more) envelopes.push(envelope)
              }
              return envelopes.length === 0 ? pull : Effect.succeed(Chunk.unsafeFromArray(envelopes))
            } catch (e) {
              this.reset()
              const message = e instanceof Codec.CodecError ? e.message : String(e)
              return Effect.fail(Option.some(new TransportError.TransportError({ reason: "InvalidFrame", message })))
            }
          }
        )
      return Stream.repeatEffectChunkOption(pull)
    })
  }

  send = (envelope: EventEnvelope): Effect.Effect<void, TransportError.TransportError> =>
    Effect.suspend(() => {
      let frame: Uint8Array
      try {
        frame = Codec.encodeFrame(envelope, this.options.maxFrameBytes)
      } catch (e) {
        const message = e instanceof Codec.CodecError ? e.message : String(e)
        return Effect.fail(new TransportError.TransportError({ reason: "InvalidFrame", message }))
      }
      // One write per envelope, so concurrent sends never interleave; a frame larger than the buffer goes through
      // when the buffer is empty. `chunkBytes` only changes how the reader receives the bytes.
      const size = this.options.chunkBytes
      if (size === undefined || frame.length <= size) return this.outgoing.offer(frame)
      const pieces: Array<Uint8Array> = []
      for (let i = 0; i < frame.length; i += size) pieces.push(frame.subarray(i, i + size))
      return this.outgoing.offerAll(pieces)
    })

  sendBytes = (bytes: Uint8Array): Effect.Effect<void, TransportError.TransportError> => this.outgoing.offer(bytes)

  end: Effect.Effect<void> = Effect.sync(() => this.outgoing.end())

  close: Effect.Effect<void> = Effect.sync(() => this.reset())

  /** Reset what is not finished: the peer's writes fail; our unfinished writing side is reset for the peer. */
  reset(): void {
    if (this.closed) return
    this.closed = true
    this.side.live.delete(this)
    this.incoming.failWriter(RESET_BY_PEER)
    this.incoming.failReader(EXCHANGE_CLOSED)
    this.outgoing.failWriter(EXCHANGE_CLOSED)
    if (!this.outgoing.isEnded) this.outgoing.failReader(RESET_BY_PEER)
  }

  /** The connection is gone: everything fails with `Closed`. */
  kill(): void {
    this.closed = true
    this.side.live.delete(this)
    this.incoming.failReader(CONNECTION_CLOSED)
    this.incoming.failWriter(CONNECTION_CLOSED)
    this.outgoing.failReader(CONNECTION_CLOSED)
    this.outgoing.failWriter(CONNECTION_CLOSED)
  }
}

/** Make a connected pair of transports; closing the scope closes the connection. */
export const makePair = (
  options: Options = {}
): Effect.Effect<readonly [InMemoryTransport, InMemoryTransport], never, Scope.Scope> => {
  const resolved = {
    bufferBytes: options.bufferBytes ?? 64 * 1024,
    chunkBytes: options.chunkBytes,
    maxFrameBytes: options.maxFrameBytes ?? Codec.DEFAULT_MAX_FRAME_BYTES,
    maxPendingExchanges: options.maxPendingExchanges ?? 1024
  }
  let closed = false
  const a: Side = { accept: new BoundedChannel(resolved.maxPendingExchanges, () => 1), live: new Set() }
  const b: Side = { accept: new BoundedChannel(resolved.maxPendingExchanges, () => 1), live: new Set() }
  const close = Effect.sync(() => {
    if (closed) return
    closed = true
    for (const side of [a, b]) {
      side.accept.end()
      side.accept.failWriter(CONNECTION_CLOSED)
      for (const end of [...side.live]) end.kill()
    }
  })
  const endpoint = (self: Side, peer: Side): InMemoryTransport => ({
    open: Effect.suspend(() => {
      if (closed) return Effect.fail(CONNECTION_CLOSED)
      const forward = new BoundedChannel<Uint8Array>(resolved.bufferBytes, (bytes) => bytes.length)
      const backward = new BoundedChannel<Uint8Array>(resolved.bufferBytes, (bytes) => bytes.length)
      const mine = new ExchangeEnd(self, backward, forward, resolved)
      const theirs = new ExchangeEnd(peer, forward, backward, resolved)
      return Effect.as(
        Effect.tapError(peer.accept.offer(theirs), () => Effect.sync(() => mine.kill())),
        mine as InMemoryExchange
      )
    }),
    accept: Stream.repeatEffectChunkOption(
      Effect.flatMap(Effect.mapError(self.accept.take(), Option.some), (items) =>
        items === END ? Effect.fail(Option.none()) : Effect.succeed(Chunk.unsafeFromArray<Exchange>(items)))
    ),
    close,
    liveExchanges: () => self.live.size
  })
  return Effect.as(Effect.addFinalizer(() => close), [endpoint(a, b), endpoint(b, a)] as const)
}
