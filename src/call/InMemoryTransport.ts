/**
 * A real in-memory connection pair: both ends of one connection in one process, for tests, examples and benchmarks.
 *
 * `makeConnectionPair` gives two `Endpoint.Connection`s whose bidirectional streams are byte pipes bounded by
 * `bufferBytes` (default 64 KiB): a write waits while the peer has not read enough, which is real backpressure. With
 * `chunkBytes` the bytes are delivered in chunks of at most that size, to exercise incremental decoding. Semantics
 * mirror QUIC streams: `end` is a FIN (the peer drains what was written, then its reads end); `reset` abandons what
 * was not finished; closing the connection fails every stream with `TransportError` (`Closed`).
 *
 * `makePair` runs the call transport (`StreamTransport`, exactly as over QUIC) on such a pair, and keeps the raw
 * connection at hand (`connection`) so a test can play a misbehaving peer with raw streams and bytes.
 */
import { Deferred, Effect, Exit, Option } from "effect"
import type { Scope } from "effect"
import * as TransportError from "../errors/TransportError.js"
import type { BidiStream, ConnectionClosed, Connection } from "../services/Endpoint.js"
import * as Endpoint from "../services/Endpoint.js"
import * as Codec from "./Codec.js"
import * as StreamTransport from "./StreamTransport.js"
import type { CallTransport } from "./Transport.js"

export interface Options {
  /** Bytes one direction of one stream may hold before a write waits (default 64 KiB). */
  readonly bufferBytes?: number
  /** Deliver bytes to the reader in chunks of at most this size (default: as written). */
  readonly chunkBytes?: number
  /** Maximum frame body accepted by the decoders (default 64 MiB). */
  readonly maxFrameBytes?: number
  /** Streams opened but not yet accepted before `openBidi` waits (default 1024, like a QUIC stream limit). */
  readonly maxPendingStreams?: number
}

/** One end of an in-memory connection, with a count of its streams not yet released (for leak checks). */
export interface InMemoryConnection extends Connection {
  readonly liveStreams: () => number
}

/** One end of the pair as the call engine's transport, with its raw connection. */
export interface InMemoryTransport extends CallTransport {
  readonly connection: InMemoryConnection
  /** Streams of this end not yet released (both sides done with them). */
  readonly liveExchanges: () => number
}

const END: unique symbol = Symbol("end")

// Errors are immutable values: allocate them once (building an error captures a stack trace, which is costly).
const RESET_BY_PEER = TransportError.reset()
const STREAM_CLOSED = TransportError.reset("stream was reset locally")
const CONNECTION_CLOSED = TransportError.closed()
const ALREADY_ENDED = TransportError.closed("stream already ended")

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

  /** Everything buffered, the end, or `undefined` when nothing is there yet (then `onReady`). Throws the reader's failure. */
  takeNow(): Array<A> | typeof END | undefined {
    if (this.readerError) throw this.readerError
    if (this.items.length > 0) {
      const items = this.items
      this.items = []
      this.used = 0
      this.wakeWriters()
      return items
    }
    return this.ended ? END : undefined
  }

  /** Call `wake` once when `takeNow` may have something (items, the end, or a failure). */
  onReady(wake: () => void): void {
    if (this.readerError || this.items.length > 0 || this.ended) return wake()
    this.reader = () => {
      this.reader = undefined
      wake()
    }
  }

  /** One item (waiting for it), or the end. */
  takeOne(): Effect.Effect<A | typeof END, TransportError.TransportError> {
    return Effect.suspend(() => {
      const now = this.pollOne()
      if (now !== undefined) return now
      return Effect.async<A | typeof END, TransportError.TransportError>((resume) => {
        this.reader = () => {
          const next = this.pollOne()
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

  private pollOne(): Effect.Effect<A | typeof END, TransportError.TransportError> | undefined {
    if (this.readerError) return Effect.fail(this.readerError)
    if (this.items.length > 0) {
      const item = this.items.shift()!
      this.used -= this.weigh(item)
      this.wakeWriters()
      return Effect.succeed(item)
    }
    if (this.ended) return Effect.succeed(END)
    return undefined
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
  readonly accept: BoundedChannel<BidiStream>
  readonly live: Set<StreamEnd>
}

let nextStreamId = 0

class StreamEnd implements BidiStream {
  readonly id = nextStreamId++
  private released = false
  /** The peer's FIN was read. */
  private sawEnd = false

  constructor(
    private readonly side: Side,
    readonly incoming: BoundedChannel<Uint8Array>,
    readonly outgoing: BoundedChannel<Uint8Array>,
    private readonly chunkBytes: number | undefined
  ) {
    side.live.add(this)
  }

  tryRead = (): Uint8Array | null | undefined => {
    const chunks = this.incoming.takeNow()
    if (chunks === undefined) return undefined
    if (chunks === END) {
      this.sawEnd = true
      this.releaseIfDone()
      return null
    }
    // Everything written so far, in one read (as a socket read would return it).
    return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)
  }

  onReadable = (wake: () => void): void => this.incoming.onReady(wake)

  readonly read: BidiStream["read"] = Endpoint.readOf(this.tryRead, this.onReadable)

  get readable(): BidiStream["readable"] {
    return Endpoint.readableOf(this.read)
  }

  write = (bytes: Uint8Array): Effect.Effect<void, TransportError.TransportError> => {
    // One write is atomic: never interleaved with another. `chunkBytes` only changes how the reader receives it.
    const size = this.chunkBytes
    if (size === undefined || bytes.length <= size) return this.outgoing.offer(bytes)
    const pieces: Array<Uint8Array> = []
    for (let i = 0; i < bytes.length; i += size) pieces.push(bytes.subarray(i, i + size))
    return this.outgoing.offerAll(pieces)
  }

  end: Effect.Effect<void> = Effect.sync(() => {
    this.outgoing.end()
    this.releaseIfDone()
  })

  reset: Effect.Effect<void> = Effect.sync(() => {
    // Stop reading (the peer's writes fail), and reset our writing side unless it was finished.
    this.incoming.failWriter(RESET_BY_PEER)
    this.incoming.failReader(STREAM_CLOSED)
    this.outgoing.failWriter(STREAM_CLOSED)
    if (!this.outgoing.isEnded) this.outgoing.failReader(RESET_BY_PEER)
    this.release()
  })

  /** Both directions finished: nothing to release any more. */
  private releaseIfDone(): void {
    if (this.outgoing.isEnded && this.sawEnd) this.release()
  }

  release(): void {
    if (this.released) return
    this.released = true
    this.side.live.delete(this)
  }

  /** The connection is gone: everything fails with `Closed`. */
  kill(): void {
    this.incoming.failReader(CONNECTION_CLOSED)
    this.incoming.failWriter(CONNECTION_CLOSED)
    this.outgoing.failReader(CONNECTION_CLOSED)
    this.outgoing.failWriter(CONNECTION_CLOSED)
    this.release()
  }
}

const address = { host: "memory", port: 0 }

/** Make a connected pair of in-memory connections; closing the scope closes the connection. */
export const makeConnectionPair = (
  options: Options = {}
): Effect.Effect<readonly [InMemoryConnection, InMemoryConnection], never, Scope.Scope> =>
  Effect.gen(function*() {
    const bufferBytes = options.bufferBytes ?? 64 * 1024
    const maxPending = options.maxPendingStreams ?? 1024
    const closedInfo = yield* Deferred.make<ConnectionClosed>()
    let closed = false
    const a: Side = { accept: new BoundedChannel(maxPending, () => 1), live: new Set() }
    const b: Side = { accept: new BoundedChannel(maxPending, () => 1), live: new Set() }
    const close = (by: ConnectionClosed["by"]) =>
      Effect.sync(() => {
        if (closed) return
        closed = true
        for (const side of [a, b]) {
          side.accept.end()
          side.accept.failWriter(CONNECTION_CLOSED)
          side.accept.failReader(CONNECTION_CLOSED)
          for (const end of [...side.live]) end.kill()
        }
        Deferred.unsafeDone(closedInfo, Exit.succeed({ by, code: 0, reason: "" }))
      })
    const end = (self: Side, peer: Side, side: "client" | "server"): Effect.Effect<InMemoryConnection> =>
      Effect.map(Endpoint.makeIdentitySlot, (identity) => ({
        side,
        alpn: "alknet/call",
        remoteAddress: address,
        peerFingerprint: Option.none(),
        openBidi: Effect.suspend(() => {
          if (closed) return Effect.fail(CONNECTION_CLOSED)
          const forward = new BoundedChannel<Uint8Array>(bufferBytes, (bytes) => bytes.length)
          const backward = new BoundedChannel<Uint8Array>(bufferBytes, (bytes) => bytes.length)
          const mine = new StreamEnd(self, backward, forward, options.chunkBytes)
          const theirs = new StreamEnd(peer, forward, backward, options.chunkBytes)
          return Effect.as(
            Effect.tapError(peer.accept.offer(theirs), () => Effect.sync(() => mine.kill())),
            mine as BidiStream
          )
        }),
        acceptBidi: Effect.flatMap(self.accept.takeOne(), (stream) =>
          stream === END ? Effect.fail(CONNECTION_CLOSED) : Effect.succeed(stream)),
        identity: identity.get,
        setIdentity: identity.set,
        close: () => close(side === "client" ? "local" : "peer"),
        closed: Deferred.await(closedInfo),
        liveStreams: () => self.live.size
      }))
    yield* Effect.addFinalizer(() => close("local"))
    return [yield* end(a, b, "client"), yield* end(b, a, "server")] as const
  })

/** Make a connected pair of call transports over an in-memory connection; closing the scope closes it. */
export const makePair = (
  options: Options = {}
): Effect.Effect<readonly [InMemoryTransport, InMemoryTransport], never, Scope.Scope> =>
  Effect.map(makeConnectionPair(options), (connections) => {
    const transport = (connection: InMemoryConnection): InMemoryTransport => ({
      ...StreamTransport.make(connection, { maxFrameBytes: options.maxFrameBytes ?? Codec.DEFAULT_MAX_FRAME_BYTES }),
      connection,
      liveExchanges: connection.liveStreams
    })
    return [transport(connections[0]), transport(connections[1])] as const
  })
