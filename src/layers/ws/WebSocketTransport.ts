/**
 * The call protocol over one WebSocket (SPEC §14): one envelope per **binary** message, no length prefix.
 *
 * A WebSocket has no streams, so the whole socket is the one channel of the transport seam (`call/Transport.ts`):
 * each message is decoded in the socket's message handler and pushed into the engine, which correlates it by id.
 *
 * Backpressure both ways: a write waits (on the socket's write callback) while more than `highWaterMark` bytes are
 * queued in the socket, and the messages of one write are corked into one socket write; when the engine asks to wait
 * (a subscription's mailbox is full) the socket is paused — no more reads, so TCP flow control slows the peer —
 * until it may go on. A text message or a message that is not a valid envelope closes the socket with a protocol
 * error (1002); an oversize message is refused by `ws` itself (1009). Either way only this connection is cut off.
 */
import { Duration, Effect, Runtime } from "effect"
import type { Scope } from "effect"
import type { WebSocket } from "ws"
import * as Codec from "../../call/Codec.js"
import type { CallTransport, Channel, Receiver } from "../../call/Transport.js"
import * as TransportError from "../../errors/TransportError.js"
import type { EventEnvelope } from "../../schema/Envelope.js"

export interface Options {
  /** Largest envelope accepted and sent, in bytes (default 64 MiB). Enforce it on the socket too (`maxPayload`). */
  readonly maxFrameBytes?: number
  /** Bytes queued in the socket before a write waits for them to be written (default 1 MiB). */
  readonly highWaterMark?: number
}

/** WebSocket close codes used here (RFC 6455 §7.4.1). */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  ProtocolError: 1002,
  TooBig: 1009
} as const

// An error is an immutable value: one for every normal close (building one captures a stack trace).
const CONNECTION_CLOSED = TransportError.closed()

/** A call transport over a WebSocket. */
export interface WebSocketTransport extends CallTransport {
  /** Let calls in flight finish, for at most `timeout`, then close the socket. */
  readonly drain: (timeout: Duration.DurationInput) => Effect.Effect<void>
  /** Resolves when the socket has closed, with the close code and reason. */
  readonly closed: Effect.Effect<{ readonly code: number; readonly reason: string }>
}

/** The underlying net/tls socket: to cork several messages into one write, and to wait for its buffer to drain. */
interface RawSocket {
  cork(): void
  uncork(): void
  once(event: "drain", listener: () => void): unknown
}

/**
 * Run the call-protocol transport over an open WebSocket. The socket is closed when the scope closes.
 */
export const make = (socket: WebSocket, options: Options = {}): Effect.Effect<WebSocketTransport, never, Scope.Scope> =>
  Effect.gen(function*() {
    const maxFrameBytes = options.maxFrameBytes ?? Codec.DEFAULT_MAX_FRAME_BYTES
    const highWaterMark = options.highWaterMark ?? 1024 * 1024
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    let receiver: Receiver | undefined
    /** Messages that arrived before `run` started. */
    let early: Array<EventEnvelope> | undefined = []
    let closedError: TransportError.TransportError | undefined
    let closeInfo: { code: number; reason: string } | undefined
    const closeWaiters: Array<() => void> = []
    let pausedBy = 0

    const pause = () => {
      if (pausedBy++ === 0) socket.pause()
    }
    const resume = () => {
      if (--pausedBy === 0) socket.resume()
    }

    const shutdown = (error: TransportError.TransportError) => {
      if (closedError !== undefined) return
      closedError = error
      for (const wake of closeWaiters.splice(0)) wake()
    }

    const protocolError = (reason: string) => {
      if (socket.readyState === socket.OPEN || socket.readyState === socket.CONNECTING) {
        socket.close(CloseCode.ProtocolError, reason.slice(0, 120))
      }
      shutdown(TransportError.closed(`connection closed: ${reason}`))
    }

    const deliver = (envelope: EventEnvelope) => {
      const wait = receiver!.receive(envelope, channel)
      if (wait === undefined) return
      pause()
      runFork(wait).addObserver(resume)
    }

    const onMessage = (data: Buffer | ArrayBuffer | Array<Buffer>, isBinary: boolean) => {
      if (closedError !== undefined) return
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
      if (early !== undefined) early.push(envelope)
      else deliver(envelope)
      holdWhileBacklogged()
    }
    const onClose = (code: number, reason: Buffer) => {
      closeInfo = { code, reason: reason.toString("utf8") }
      shutdown(CONNECTION_CLOSED)
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
      shutdown(CONNECTION_CLOSED)
    })

    /** Resolves once the transport is shut down (closed by us, the peer, or a protocol error). */
    const shutDown = Effect.async<void>((resume) => {
      if (closedError !== undefined) return resume(Effect.void)
      const wake = () => resume(Effect.void)
      closeWaiters.push(wake)
      return Effect.sync(() => {
        const i = closeWaiters.indexOf(wake)
        if (i >= 0) closeWaiters.splice(i, 1)
      })
    })
    const closed = Effect.flatMap(
      Effect.async<void>((resume) => {
        if (closeInfo !== undefined || socket.readyState === socket.CLOSED) return resume(Effect.void)
        const wake = () => resume(Effect.void)
        socket.once("close", wake)
        return Effect.sync(() => socket.off("close", wake))
      }),
      () => Effect.succeed(closeInfo ?? { code: 1006, reason: "" })
    )

    yield* Effect.addFinalizer(() =>
      Effect.zipRight(
        closeSocket,
        // Give the close handshake a moment (interruptible: a finalizer is not, and the timeout must be able to win);
        // a peer that never answers — or is stuck in the middle of a message — is cut off.
        Effect.ignore(Effect.timeout(Effect.interruptible(closed), "1 second")).pipe(
          Effect.zipRight(Effect.sync(() => {
            if (socket.readyState !== socket.CLOSED) socket.terminate()
            socket.off("message", onMessage)
          }))
        )
      )
    )

    const raw = (socket as unknown as { _socket?: RawSocket })._socket

    const send = (bytes: Array<Uint8Array>): Effect.Effect<void, TransportError.TransportError> =>
      Effect.async<void, TransportError.TransportError>((resume) => {
        if (closedError !== undefined || socket.readyState !== socket.OPEN) {
          return resume(Effect.fail(closedError ?? CONNECTION_CLOSED))
        }
        let waiting = true
        const last = bytes.length - 1
        const several = last > 0 && raw !== undefined
        if (several) raw.cork()
        for (let i = 0; i < last; i++) socket.send(bytes[i]!, { binary: true })
        socket.send(bytes[last]!, { binary: true }, (error) => {
          if (!waiting) return
          waiting = false
          resume(error ? Effect.fail(TransportError.closed(`connection closed: ${error.message}`)) : Effect.void)
        })
        if (several) raw.uncork()
        // Below the high-water mark the bytes are as good as accepted: don't wait for the write callback.
        if (waiting && socket.bufferedAmount <= highWaterMark) {
          waiting = false
          resume(Effect.void)
        }
      })

    /**
     * While more than `highWaterMark` bytes wait to be written to the peer, stop reading it: a peer that sends
     * requests and does not read the answers is held back by TCP, not by our memory.
     */
    let heldForWrites = false
    const holdWhileBacklogged = () => {
      if (heldForWrites || raw === undefined || socket.bufferedAmount <= highWaterMark) return
      heldForWrites = true
      pause()
      raw.once("drain", () => {
        heldForWrites = false
        resume()
      })
    }

    const channel: Channel = {
      write: (envelopes) => {
        const bytes: Array<Uint8Array> = []
        try {
          for (const envelope of envelopes) bytes.push(Codec.encodeEnvelope(envelope, maxFrameBytes))
        } catch (e) {
          return Effect.fail(TransportError.invalidFrame(e))
        }
        return send(bytes)
      },
      post: (envelopes) => {
        if (closedError !== undefined || socket.readyState !== socket.OPEN) return
        try {
          for (const envelope of envelopes) socket.send(Codec.encodeEnvelope(envelope, maxFrameBytes), { binary: true })
        } catch {
          return
        }
        holdWhileBacklogged()
      },
      close: () => undefined,
      reset: () => undefined
    }

    const transport: WebSocketTransport = {
      perCall: false,
      run: (to) =>
        Effect.suspend(() => {
          receiver = to
          const waiting = early ?? []
          early = undefined
          for (const envelope of waiting) deliver(envelope)
          return shutDown
        }),
      open: Effect.suspend(() => (closedError !== undefined ? Effect.fail(closedError) : Effect.succeed(channel))),
      close: closeSocket,
      drain: (timeout) =>
        Effect.zipRight(
          Effect.ignore(Effect.timeout(
            Effect.repeat(Effect.sleep(Duration.millis(5)), {
              until: () => closedError !== undefined || receiver === undefined || receiver.idle()
            }),
            timeout
          )),
          closeSocket
        ),
      closed
    }
    return transport
  })
