/**
 * The call protocol over one WebSocket (SPEC §14): one envelope per **binary** message, no length prefix.
 *
 * A WebSocket has no streams, so this module demultiplexes messages by envelope `id` into the virtual exchanges of the
 * transport seam (`call/Transport.ts`):
 *
 * - a message whose id belongs to an open exchange goes to that exchange (answers to our calls, aborts of the
 *   peer's in-flight requests);
 * - a `call.requested` with a new id starts a new accepted exchange, which lives until the engine has answered it;
 * - any other message with an unknown id becomes a one-envelope accepted exchange (the engine correlates it by id and
 *   ignores what it cannot match), so nothing is held for it.
 *
 * `open` makes an outgoing virtual exchange, bound to the id of the first envelope sent on it.
 *
 * Backpressure both ways: `send` waits (on the socket's write callback) while more than `highWaterMark` bytes are
 * queued in the socket; when the engine stops reading an exchange and it holds `exchangeBuffer` messages, the
 * socket is paused (no more reads, so TCP flow control slows the peer) until the exchange drains. A text message or
 * a message that is not a valid envelope closes the socket with a protocol error (1002); an oversize message is
 * refused by `ws` itself (1009). Either way only this connection is cut off.
 */
import { Duration, Effect, Option, Queue, Stream } from "effect"
import type { Scope } from "effect"
import type { WebSocket } from "ws"
import * as Codec from "../../call/Codec.js"
import type { CallTransport, Exchange } from "../../call/Transport.js"
import * as TransportError from "../../errors/TransportError.js"
import type { EventEnvelope } from "../../schema/Envelope.js"

export interface Options {
  /** Largest envelope accepted and sent, in bytes (default 64 MiB). Enforce it on the socket too (`maxPayload`). */
  readonly maxFrameBytes?: number
  /** Messages one exchange may hold unread before the socket is paused (default 64). */
  readonly exchangeBuffer?: number
  /** Bytes queued in the socket before `send` waits for them to be written (default 1 MiB). */
  readonly highWaterMark?: number
}

/** WebSocket close codes used here (RFC 6455 §7.4.1). */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  ProtocolError: 1002,
  TooBig: 1009
} as const

/** A call transport over a WebSocket, with a count of its live exchanges for leak checks. */
export interface WebSocketTransport extends CallTransport {
  readonly liveExchanges: () => number
  /** Let open exchanges finish, for at most `timeout`, then close the socket. */
  readonly drain: (timeout: Duration.DurationInput) => Effect.Effect<void>
  /** Resolves when the socket has closed, with the close code and reason. */
  readonly closed: Effect.Effect<{ readonly code: number; readonly reason: string }>
}

type Item = EventEnvelope | typeof END
const END: unique symbol = Symbol("end")

/** One virtual exchange: a queue of the envelopes routed to it, and our side's state. */
class VirtualExchange {
  readonly queue = Effect.runSync(Queue.unbounded<Item>())
  /** Envelopes delivered and not yet taken by the engine. */
  buffered = 0
  id: string | undefined
  ended = false
  closed = false
  failure: TransportError.TransportError | undefined
  paused = false

  constructor(readonly owner: Demux) {}

  deliver(item: Item): void {
    if (this.closed) return
    Queue.unsafeOffer(this.queue, item)
    if (item !== END) this.buffered++
    if (item !== END && !this.paused && this.owner.isFull(this)) {
      this.paused = true
      this.owner.pause(1)
    }
  }

  fail(error: TransportError.TransportError): void {
    if (this.closed || this.failure) return
    this.failure = error
    Queue.unsafeOffer(this.queue, END)
  }

  /** After the engine took an item: resume the socket if this exchange was what held it. */
  taken(item: Item): void {
    if (item !== END) this.buffered--
    if (this.paused && !this.owner.isFull(this)) {
      this.paused = false
      this.owner.pause(-1)
    }
  }

  release(): void {
    if (this.closed) return
    this.closed = true
    if (this.paused) {
      this.paused = false
      this.owner.pause(-1)
    }
    this.owner.forget(this)
    // Wake a reader still waiting; what was not read is dropped with the exchange.
    Queue.unsafeOffer(this.queue, END)
  }
}

/** The per-socket demultiplexer. */
class Demux {
  readonly byId = new Map<string, VirtualExchange>()
  readonly all = new Set<VirtualExchange>()
  readonly accepted = Effect.runSync(Queue.unbounded<VirtualExchange | typeof END>())
  private pausedBy = 0
  private idleWaiters: Array<() => void> = []
  closedError: TransportError.TransportError | undefined

  constructor(private readonly socket: WebSocket, private readonly exchangeBuffer: number) {}

  isFull(exchange: VirtualExchange): boolean {
    return exchange.buffered >= this.exchangeBuffer
  }

  pause(delta: number): void {
    const before = this.pausedBy
    this.pausedBy += delta
    if (before === 0 && this.pausedBy > 0) this.socket.pause()
    else if (before > 0 && this.pausedBy === 0) this.socket.resume()
  }

  make(): VirtualExchange {
    const exchange = new VirtualExchange(this)
    this.all.add(exchange)
    return exchange
  }

  bind(exchange: VirtualExchange, id: string): void {
    if (exchange.id !== undefined) return
    exchange.id = id
    if (!this.byId.has(id)) this.byId.set(id, exchange)
  }

  forget(exchange: VirtualExchange): void {
    this.all.delete(exchange)
    if (exchange.id !== undefined && this.byId.get(exchange.id) === exchange) this.byId.delete(exchange.id)
    if (this.all.size === 0) for (const wake of this.idleWaiters.splice(0)) wake()
  }

  /** Resolves when no exchange is open. */
  readonly idle: Effect.Effect<void> = Effect.async<void>((resume) => {
    if (this.all.size === 0 || this.closedError) return resume(Effect.void)
    const wake = () => resume(Effect.void)
    this.idleWaiters.push(wake)
    return Effect.sync(() => {
      const i = this.idleWaiters.indexOf(wake)
      if (i >= 0) this.idleWaiters.splice(i, 1)
    })
  })

  route(envelope: EventEnvelope): void {
    const known = this.byId.get(envelope.id)
    if (known !== undefined) return known.deliver(envelope)
    const exchange = this.make()
    if (envelope.type === "call.requested") this.bind(exchange, envelope.id)
    exchange.deliver(envelope)
    if (envelope.type !== "call.requested") exchange.deliver(END)
    Queue.unsafeOffer(this.accepted, exchange)
  }

  shutdown(error: TransportError.TransportError): void {
    if (this.closedError) return
    this.closedError = error
    for (const exchange of this.all) exchange.fail(error)
    Queue.unsafeOffer(this.accepted, END)
    for (const wake of this.idleWaiters.splice(0)) wake()
  }
}

/**
 * Run the call-protocol transport over an open WebSocket. The socket is closed when the scope closes.
 */
export const make = (socket: WebSocket, options: Options = {}): Effect.Effect<WebSocketTransport, never, Scope.Scope> =>
  Effect.gen(function*() {
    const maxFrameBytes = options.maxFrameBytes ?? Codec.DEFAULT_MAX_FRAME_BYTES
    const highWaterMark = options.highWaterMark ?? 1024 * 1024
    const demux = new Demux(socket, Math.max(1, options.exchangeBuffer ?? 64))
    let closeInfo: { code: number; reason: string } | undefined
    const closeWaiters: Array<() => void> = []

    const protocolError = (reason: string) => {
      if (socket.readyState === socket.OPEN || socket.readyState === socket.CONNECTING) {
        socket.close(CloseCode.ProtocolError, reason.slice(0, 120))
      }
      demux.shutdown(TransportError.closed(`connection closed: ${reason}`))
    }

    const onMessage = (data: Buffer | ArrayBuffer | Array<Buffer>, isBinary: boolean) => {
      if (demux.closedError) return
      if (!isBinary) return protocolError("text messages are not part of the call protocol")
      const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data)
      let envelope: EventEnvelope
      try {
        if (bytes.length === 0) throw new Codec.CodecError({ reason: "EmptyFrame", message: "message is empty" })
        if (bytes.length > maxFrameBytes) {
          throw new Codec.CodecError({ reason: "FrameTooLarge", message: `message of ${bytes.length} bytes is too large` })
        }
        envelope = Codec.decodeEnvelope(bytes)
      } catch (e) {
        return protocolError(`invalid envelope: ${e instanceof Error ? e.message : String(e)}`)
      }
      demux.route(envelope)
    }
    const onClose = (code: number, reason: Buffer) => {
      closeInfo = { code, reason: reason.toString("utf8") }
      demux.shutdown(TransportError.closed())
      for (const wake of closeWaiters.splice(0)) wake()
    }
    const onError = () => {
      // `ws` emits "close" after "error"; the close handler does the work. Listening keeps the error handled.
    }
    socket.on("message", onMessage)
    socket.on("close", onClose)
    socket.on("error", onError)

    const closeSocket = Effect.sync(() => {
      if (socket.readyState === socket.OPEN || socket.readyState === socket.CONNECTING) {
        socket.close(CloseCode.Normal, "")
      }
      demux.shutdown(TransportError.closed())
    })

    const closed = Effect.async<{ code: number; reason: string }>((resume) => {
      if (closeInfo) return resume(Effect.succeed(closeInfo))
      const wake = () => resume(Effect.succeed(closeInfo!))
      closeWaiters.push(wake)
      return Effect.sync(() => {
        const i = closeWaiters.indexOf(wake)
        if (i >= 0) closeWaiters.splice(i, 1)
      })
    })

    yield* Effect.addFinalizer(() =>
      Effect.zipRight(
        closeSocket,
        // Give the close handshake a moment; a peer that never answers is cut off.
        Effect.ignore(Effect.timeout(closed, "1 second")).pipe(
          Effect.zipRight(Effect.sync(() => {
            if (socket.readyState !== socket.CLOSED) socket.terminate()
            socket.off("message", onMessage)
          }))
        )
      )
    )

    const sendBytes = (bytes: Uint8Array): Effect.Effect<void, TransportError.TransportError> =>
      Effect.async<void, TransportError.TransportError>((resume) => {
        if (demux.closedError || socket.readyState !== socket.OPEN) {
          return resume(Effect.fail(demux.closedError ?? TransportError.closed()))
        }
        let waiting = true
        socket.send(bytes, { binary: true }, (error) => {
          if (!waiting) return
          waiting = false
          resume(error ? Effect.fail(TransportError.closed(`connection closed: ${error.message}`)) : Effect.void)
        })
        // Below the high-water mark the bytes are as good as accepted: don't wait for the write callback.
        if (waiting && socket.bufferedAmount <= highWaterMark) {
          waiting = false
          resume(Effect.void)
        }
      })

    const exchangeOf = (exchange: VirtualExchange): Exchange => ({
      receive: Stream.repeatEffectOption(
        Effect.suspend(() => (exchange.closed ? Effect.fail(Option.none()) : Queue.take(exchange.queue))).pipe(
          Effect.flatMap((item) => {
            exchange.taken(item)
            if (item !== END) return Effect.succeed(item)
            return Effect.fail(exchange.failure ? Option.some(exchange.failure) : Option.none())
          })
        )
      ),
      send: (envelope) =>
        Effect.suspend(() => {
          if (exchange.closed || exchange.ended) return Effect.fail(TransportError.closed("exchange already ended"))
          let bytes: Uint8Array
          try {
            bytes = Codec.encodeEnvelope(envelope, maxFrameBytes)
          } catch (e) {
            return Effect.fail(
              new TransportError.TransportError({ reason: "InvalidFrame", message: e instanceof Error ? e.message : String(e) })
            )
          }
          demux.bind(exchange, envelope.id)
          return sendBytes(bytes)
        }),
      end: Effect.sync(() => {
        exchange.ended = true
      }),
      close: Effect.sync(() => {
        exchange.ended = true
        exchange.release()
      })
    })

    const transport: WebSocketTransport = {
      open: Effect.suspend(() =>
        demux.closedError
          ? Effect.fail(demux.closedError)
          : Effect.succeed(exchangeOf(demux.make()))
      ),
      accept: Stream.repeatEffectOption(
        Effect.flatMap(Queue.take(demux.accepted), (item) =>
          item === END ? Effect.fail(Option.none()) : Effect.succeed(exchangeOf(item)))
      ).pipe(Stream.catchAllCause(() => Stream.empty)),
      close: closeSocket,
      liveExchanges: () => demux.all.size,
      drain: (timeout) => Effect.zipRight(Effect.ignore(Effect.timeout(demux.idle, timeout)), closeSocket),
      closed
    }
    return transport
  })
