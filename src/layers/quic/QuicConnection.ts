/**
 * A driver connection (`./Driver.ts`) as alknet's transport-neutral `Connection` / `BidiStream`.
 *
 * Reads and writes try quiche synchronously first and only suspend the fiber when quiche has nothing to read or no
 * window to write into; the driver wakes them level-triggered, so a wake-up cannot be lost. Stream and connection
 * failures arrive as `StreamFailure` values and become typed `TransportError`s here.
 */
import { Deferred, Duration, Effect, Exit, Option } from "effect"
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

const fingerprints = new WeakMap<Driver.QuicConnection, Option.Option<string>>()

/**
 * The fingerprint of the certificate the peer presented (none: it presented none, or one we cannot read), worked out
 * once per connection: the handshake's verification and the `Connection` both ask, and parsing a certificate costs.
 */
export const peerFingerprint = (connection: Driver.QuicConnection): Option.Option<string> => {
  let fingerprint = fingerprints.get(connection)
  if (fingerprint === undefined) {
    const leaf = connection.native.peerCertChain()?.[0]
    fingerprint = leaf === undefined ? Option.none() : Tls.fingerprint(leaf)
    fingerprints.set(connection, fingerprint)
  }
  return fingerprint
}

/** A connection plus what only the QUIC layer needs. */
export interface QuicConnection extends Connection {
  /** Reset every open stream (the end of a drain that timed out); the connection stays up. */
  readonly destroyStreams: Effect.Effect<void>
}

const wrapStream = (stream: Driver.QuicStream): BidiStream => {
  let ended = false
  let reset = false
  const tryRead = (): Uint8Array | null | undefined => {
    try {
      return stream.tryRead()
    } catch (e) {
      throw toTransportError(e)
    }
  }
  const onReadable = (wake: () => void) => stream.onReadable(wake)
  const read = Endpoint.readOf(tryRead, onReadable)
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
    tryRead,
    onReadable,
    read,
    get readable() {
      return Endpoint.readableOf(read)
    },
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
  const closedInfo = Effect.runSync(Deferred.make<ConnectionClosed>())
  const identity = Effect.runSync(Endpoint.makeIdentitySlot)
  let released: Promise<void> | undefined
  const releaseOnce = () => (released ??= release().catch(() => undefined))

  // Peer-opened streams not yet accepted, and the accepts waiting for one (no fiber per accept: a stream per call).
  const incoming: Array<Driver.QuicStream> = []
  const accepting: Array<(stream: Driver.QuicStream | undefined) => void> = []
  const closedError = () => Effect.fail(toTransportError(connection.closedFailure()))
  const acceptBidi: Effect.Effect<BidiStream, TransportError> = Effect.suspend(() => {
    const stream = incoming.shift()
    if (stream !== undefined) return Effect.succeed(wrapStream(stream))
    if (connection.closeInfo !== undefined) return closedError()
    return Effect.async<BidiStream, TransportError>((resume) => {
      const take = (next: Driver.QuicStream | undefined) =>
        resume(next === undefined ? closedError() : Effect.succeed(wrapStream(next)))
      accepting.push(take)
      return Effect.sync(() => {
        const i = accepting.indexOf(take)
        if (i >= 0) accepting.splice(i, 1)
      })
    })
  })
  const onClosed = (info: Driver.CloseInfo) => {
    Deferred.unsafeDone(closedInfo, Exit.succeed(closeInfo(info)))
    for (const take of accepting.splice(0)) take(undefined)
    void releaseOnce()
  }

  for (const stream of connection.streams.values()) {
    if ((stream.id & 1) !== (side === "client" ? 0 : 1)) incoming.push(stream)
  }
  connection.events = {
    onStream: (stream) => {
      const take = accepting.shift()
      if (take !== undefined) take(stream)
      else incoming.push(stream)
    },
    onClose: onClosed
  }
  if (connection.closeInfo !== undefined) onClosed(connection.closeInfo)

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

  return {
    side,
    alpn: Buffer.from(connection.native.applicationProto()).toString("utf8"),
    remoteAddress: { host: connection.remote.host, port: connection.remote.port } satisfies Address,
    peerFingerprint: peerFingerprint(connection),
    openBidi,
    acceptBidi,
    identity: identity.get,
    setIdentity: identity.set,
    close,
    closed: Deferred.await(closedInfo),
    destroyStreams: Effect.sync(() => connection.resetStreams(0))
  }
}
