/**
 * A driver connection (`./Driver.ts`) as alknet's transport-neutral `Connection` / `BidiStream`.
 *
 * Reads and writes try quiche synchronously first and only suspend the fiber when quiche has nothing to read or no
 * window to write into; the driver wakes them level-triggered, so a wake-up cannot be lost. Stream and connection
 * failures arrive as `StreamFailure` values and become typed `TransportError`s here.
 */
import { Deferred, Duration, Effect, Exit, Option, Queue, Stream } from "effect"
import type { Address, BidiStream, CloseOptions, Connection, ConnectionClosed } from "../../services/Endpoint.js"
import * as Endpoint from "../../services/Endpoint.js"
import * as Tls from "../../services/Tls.js"
import { TransportError } from "../../errors/TransportError.js"
import * as Driver from "./Driver.js"

/** The driver's close, as the transport-neutral `ConnectionClosed`. */
export const closeInfo = (info: Driver.CloseInfo): ConnectionClosed => ({
  by: info.by,
  code: info.code,
  reason: Driver.closeReason(info)
})

const toTransportError = (e: unknown): TransportError => {
  if (e instanceof Driver.StreamFailure) {
    switch (e.kind) {
      case "closed":
        return new TransportError({ reason: "Closed", message: e.message })
      case "io":
        return new TransportError({ reason: "Io", message: e.message })
      default:
        return new TransportError({ reason: "Reset", message: e.message })
    }
  }
  return new TransportError({ reason: "Io", message: `stream failed: ${e instanceof Error ? e.message : String(e)}` })
}

/** A connection plus what only the QUIC layer needs. */
export interface QuicConnection extends Connection {
  /** Reset every open stream (the end of a drain that timed out); the connection stays up. */
  readonly destroyStreams: Effect.Effect<void>
}

const wrapStream = (stream: Driver.QuicStream): BidiStream => {
  let ended = false
  let reset = false
  const waitReadable = Effect.async<void>((resume) => {
    stream.onReadable(() => resume(Effect.void))
  })
  const read: Effect.Effect<Option.Option<Uint8Array>, TransportError> = Effect.suspend(() => {
    let chunk: Uint8Array | null | undefined
    try {
      chunk = stream.tryRead()
    } catch (e) {
      return Effect.fail(toTransportError(e))
    }
    if (chunk === undefined) return Effect.zipRight(waitReadable, read)
    return Effect.succeed(chunk === null ? Option.none() : Option.some(chunk))
  })
  const waitWritable = Effect.async<void>((resume) => {
    stream.onWritable(() => resume(Effect.void))
  })
  const writeRest = (chunk: Uint8Array): Effect.Effect<void, TransportError> =>
    Effect.suspend(() => {
      let rest = chunk
      while (rest.byteLength > 0) {
        let written: number
        try {
          written = stream.trySend(rest)
        } catch (e) {
          return Effect.fail(toTransportError(e))
        }
        if (written === 0) return Effect.zipRight(waitWritable, writeRest(rest))
        rest = rest.subarray(written)
      }
      return Effect.void
    })
  return {
    id: stream.id,
    read,
    readable: Stream.repeatEffectOption(
      Effect.flatMap(Effect.mapError(read, Option.some), (chunk) => Effect.mapError(chunk, () => Option.none()))
    ),
    write: (chunk) =>
      ended || reset
        ? Effect.fail(
          new TransportError({ reason: reset ? "Reset" : "Io", message: `stream ${reset ? "was reset" : "already ended"}` })
        )
        : writeRest(chunk),
    end: Effect.sync(() => {
      if (ended || reset) return
      ended = true
      stream.end()
    }),
    reset: Effect.sync(() => {
      if (reset) return
      reset = true
      stream.reset(0)
    })
  }
}

/**
 * Wrap an established driver connection. Synchronous, so it runs in the same tick as the event that handed us the
 * connection: no peer-opened stream slips by. `release` runs after the connection is closed (a client closes its
 * socket there).
 */
export const make = (
  connection: Driver.QuicConnection,
  side: "client" | "server",
  release: () => Promise<void>
): QuicConnection => {
  const incoming = Effect.runSync(Queue.unbounded<Driver.QuicStream>())
  const closedInfo = Effect.runSync(Deferred.make<ConnectionClosed>())
  const identity = Effect.runSync(Endpoint.makeIdentitySlot)
  let released: Promise<void> | undefined
  const releaseOnce = () => (released ??= release().catch(() => undefined))

  for (const stream of connection.streams.values()) {
    if ((stream.id & 1) !== (side === "client" ? 0 : 1)) Queue.unsafeOffer(incoming, stream)
  }
  connection.events = {
    onStream: (stream) => void Queue.unsafeOffer(incoming, stream),
    onClose: (info) => {
      Deferred.unsafeDone(closedInfo, Exit.succeed(closeInfo(info)))
      void releaseOnce()
    }
  }
  if (connection.closeInfo !== undefined) {
    Deferred.unsafeDone(closedInfo, Exit.succeed(closeInfo(connection.closeInfo)))
    void releaseOnce()
  }

  const closedFailure = Effect.flatMap(
    Deferred.await(closedInfo),
    () => Effect.fail(toTransportError(connection.closedFailure()))
  )
  const waitCredit = Effect.async<void>((resume) => {
    connection.onStreamCredit(() => resume(Effect.void))
  })
  const openBidi: Effect.Effect<BidiStream, TransportError> = Effect.suspend(() => {
    let stream: Driver.QuicStream | undefined
    try {
      stream = connection.openBidi()
    } catch (e) {
      return Effect.fail(toTransportError(e))
    }
    // Past the peer's stream limit: wait for it to grant more (MAX_STREAMS).
    return stream === undefined ? Effect.zipRight(waitCredit, openBidi) : Effect.succeed(wrapStream(stream))
  })

  const closeNow = (code: number, reason: string) =>
    Effect.promise(() => {
      connection.close(true, code, reason)
      return releaseOnce()
    })

  const close = (options: CloseOptions = {}): Effect.Effect<void> =>
    Effect.suspend(() => {
      const code = options.code ?? 0
      const reason = options.reason ?? ""
      if (options.drainTimeout === undefined) return closeNow(code, reason)
      // Graceful: no new streams; open ones finish. At the deadline, reset them.
      connection.stopping = true
      return Effect.promise(() => connection.drained()).pipe(
        // Interruptible: close often runs in a finalizer, where the timeout could not otherwise cut the wait short.
        Effect.interruptible,
        Effect.timeout(Duration.decode(options.drainTimeout)),
        Effect.ignore,
        Effect.zipRight(closeNow(code, reason))
      )
    })

  const leaf = connection.native.peerCertChain()?.[0]
  return {
    side,
    alpn: Buffer.from(connection.native.applicationProto()).toString("utf8"),
    remoteAddress: { host: connection.remote.host, port: connection.remote.port } satisfies Address,
    peerFingerprint: leaf === undefined ? Option.none() : Tls.fingerprint(leaf),
    openBidi,
    acceptBidi: Effect.raceFirst(Effect.map(Queue.take(incoming), wrapStream), closedFailure),
    identity: identity.get,
    setIdentity: identity.set,
    close,
    closed: Deferred.await(closedInfo),
    destroyStreams: Effect.sync(() => connection.resetStreams(0))
  }
}
