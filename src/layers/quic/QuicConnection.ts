/**
 * An @matrixai/quic connection seen as an `Endpoint.Connection`, and its streams as `Endpoint.BidiStream`s.
 *
 * Library facts this module contains (found in a spike, kept here so nothing else depends on them):
 * - The library has no public accessor for the negotiated ALPN; it lives on the native connection
 *   (`negotiatedAlpn`).
 * - Streams are web `ReadableStream` / `WritableStream`. A stream the peer force-closes (RESET_STREAM /
 *   STOP_SENDING) rejects reads and writes with whatever the stream's `codeToReason` returns; a connection that
 *   closes rejects them with its connection error. Every promise we take from the library is awaited inside an
 *   Effect, so a rejection becomes a typed `TransportError` and never an unhandled rejection.
 * - The library emits a peer-opened stream as soon as the connection is verified, which can be before the
 *   server (or client) has handed us the connection: `make` picks up streams already in the connection's stream
 *   map before it listens for new ones.
 * - Opening a stream past the peer's stream limit corrupts the library's stream-id bookkeeping, so `openBidi` waits
 *   for credit first.
 */
import { errors, events } from "@matrixai/quic"
import type { QUICConnection, QUICStream } from "@matrixai/quic"
import { Deferred, Duration, Effect, Exit, Option, Queue, Stream } from "effect"
import type { Address, BidiStream, CloseOptions, Connection, ConnectionClosed } from "../../services/Endpoint.js"
import * as Endpoint from "../../services/Endpoint.js"
import * as Tls from "../../services/Tls.js"
import { TransportError } from "../../errors/TransportError.js"

/** The reason a peer's RESET_STREAM / STOP_SENDING surfaces with (our `codeToReason`). */
export class PeerStreamCode {
  constructor(readonly direction: "read" | "write", readonly code: number) {}
}
/** The reason we reset a stream with. */
class LocalReset {}
const localReset = new LocalReset()

/** Stream error mapping given to the library (`codeToReason` / `reasonToCode`). */
export const codeToReason = (direction: "read" | "write", code: number): unknown => new PeerStreamCode(direction, code)
export const reasonToCode = (_direction: "read" | "write", _reason?: unknown): number => 0

/** Library-internal view of a connection: the native handle and the stream map (see the module comment). */
interface QuicInternals {
  readonly conn: {
    applicationProto(): Uint8Array
    peerStreamsLeftBidi(): number
    isDraining(): boolean
    isClosed(): boolean
  }
  readonly streamMap: Map<number, QUICStream>
}
/** The library's listener type (its event classes are not DOM events to the type checker). */
export type Listener = Parameters<QUICConnection["addEventListener"]>[1]
const internals = (connection: QUICConnection): QuicInternals => connection as unknown as QuicInternals

/**
 * Enlarge the kernel buffers of the UDP socket under a server or client (the library leaves the OS default, about
 * 200 KiB on Linux, which a burst of large datagrams overflows: the loss then costs retransmission timeouts). The
 * kernel caps the size at its maximum (net.core.rmem_max / wmem_max).
 */
export const setUdpBufferSize = (owner: object, bytes: number): void => {
  const socket = (owner as { socket?: { socket?: { setRecvBufferSize(n: number): void; setSendBufferSize(n: number): void } } })
    .socket?.socket
  if (socket === undefined || bytes <= 0) return
  try {
    socket.setRecvBufferSize(bytes)
    socket.setSendBufferSize(bytes)
  } catch {
    // Not fatal: the OS default stays.
  }
}

/**
 * The ALPN the handshake settled on. @matrixai/quic has no public accessor for it: read it from the native
 * connection (quiche's `application_proto()`).
 */
export const negotiatedAlpn = (connection: QUICConnection): string =>
  Buffer.from(internals(connection).conn.applicationProto()).toString("utf8")

const TLS_ALERTS: Record<number, string> = {
  40: "handshake_failure",
  42: "bad_certificate",
  43: "unsupported_certificate",
  45: "certificate_expired",
  46: "certificate_unknown",
  48: "unknown_ca",
  49: "access_denied",
  80: "internal_error",
  116: "certificate_required",
  120: "no_application_protocol"
}
/** QUIC carries TLS alerts as transport error codes 0x100 + alert. */
export const tlsAlert = (code: number): Option.Option<number> =>
  code >= 0x100 && code <= 0x1ff ? Option.some(code - 0x100) : Option.none()
export const describeTlsAlert = (alert: number): string => `TLS alert ${alert} (${TLS_ALERTS[alert] ?? "unknown"})`

/** What closed the connection, from the library's connection error. */
export const closeInfo = (error: unknown): ConnectionClosed => {
  if (error instanceof errors.ErrorQUICConnectionIdleTimeout) {
    return { by: "idle", code: 0, reason: "idle timeout" }
  }
  const by = error instanceof errors.ErrorQUICConnectionPeer || error instanceof errors.ErrorQUICConnectionPeerTLS
    ? "peer"
    : "local"
  const data = (error as { data?: { errorCode?: number; reason?: Uint8Array; isApp?: boolean } }).data
  const code = data?.errorCode ?? 0
  const text = data?.reason !== undefined ? Buffer.from(data.reason).toString("utf8") : ""
  const alert = data?.isApp === true ? Option.none() : tlsAlert(code)
  const reason = Option.match(alert, {
    onNone: () => text,
    onSome: (a) =>
      by === "peer"
        ? `the peer rejected the TLS handshake: ${describeTlsAlert(a)}`
        : `we rejected the peer's TLS handshake: ${describeTlsAlert(a)}`
  })
  return { by, code, reason }
}

const closedMessage = (info: ConnectionClosed): string =>
  `connection closed${info.by === "idle" ? " (idle timeout)" : ` by ${info.by === "peer" ? "the peer" : "us"}`}` +
  (info.reason !== "" ? `: ${info.reason}` : info.code !== 0 ? ` (code ${info.code})` : "")

/** How the owner (server or client) closes the underlying connection. */
export type Release = (options: { readonly force: boolean; readonly code: number; readonly reason: string }) => Promise<void>

/** A connection plus what only the QUIC layer needs. */
export interface QuicConnection extends Connection {
  /** Reset every open stream (the end of a drain that timed out); the connection stays up. */
  readonly destroyStreams: Effect.Effect<void>
}

/**
 * Wrap a started library connection. Synchronous on purpose: it must run in the same tick as the event that handed
 * us the connection, so no peer-opened stream slips between "already opened" and "listening".
 */
export const make = (quic: QUICConnection, side: "client" | "server", release: Release): QuicConnection => {
  const incoming = Effect.runSync(Queue.unbounded<QUICStream>())
  const closedInfo = Effect.runSync(Deferred.make<ConnectionClosed>())
  const identity = Effect.runSync(Endpoint.makeIdentitySlot)
  let closedValue: ConnectionClosed | undefined

  const markClosed = (info: ConnectionClosed) => {
    if (closedValue !== undefined) return
    closedValue = info
    Deferred.unsafeDone(closedInfo, Exit.succeed(info))
  }
  const onError = (event: events.EventQUICConnectionError) => markClosed(closeInfo(event.detail))
  const onStopped = () => markClosed(closedValue ?? { by: "local", code: 0, reason: "" })
  const onStream = (event: events.EventQUICConnectionStream) => {
    if (event.detail.type === "bidi") Queue.unsafeOffer(incoming, event.detail)
  }
  for (const stream of internals(quic).streamMap.values()) {
    if (stream.initiated === "peer" && stream.type === "bidi") Queue.unsafeOffer(incoming, stream)
  }
  quic.addEventListener(events.EventQUICConnectionStream.name, onStream as Listener)
  quic.addEventListener(events.EventQUICConnectionError.name, onError as Listener)
  quic.addEventListener(events.EventQUICConnectionStopped.name, onStopped as Listener, { once: true })

  const closingError = (): TransportError | undefined => {
    if (closedValue !== undefined) return new TransportError({ reason: "Closed", message: closedMessage(closedValue) })
    const native = internals(quic).conn
    if (native.isDraining() || native.isClosed()) return new TransportError({ reason: "Closed", message: "connection closed" })
    return undefined
  }
  const failure = (op: "read" | "write", e: unknown): TransportError => {
    const closing = closingError()
    if (closing !== undefined) return closing
    if (e instanceof PeerStreamCode) {
      return new TransportError({
        reason: "Reset",
        message: `stream ${e.direction === "read" ? "reset" : "stopped"} by peer (code ${e.code})`
      })
    }
    if (e instanceof LocalReset) return new TransportError({ reason: "Reset", message: "stream was reset locally" })
    if (e instanceof errors.ErrorQUICConnection) return new TransportError({ reason: "Closed", message: "connection closed" })
    return new TransportError({ reason: "Io", message: `stream ${op} failed: ${e instanceof Error ? e.message : String(e)}` })
  }

  const wrapStream = (stream: QUICStream): BidiStream => {
    const reader = stream.readable.getReader()
    const writer = stream.writable.getWriter()
    let ended = false
    let reset = false
    const read: Effect.Effect<Option.Option<Uint8Array>, TransportError> = Effect.tryPromise({
      try: () => reader.read(),
      catch: (e) => failure("read", e)
    }).pipe(Effect.map((r) => (r.done ? Option.none() : Option.some(r.value))))
    return {
      id: stream.streamId,
      read,
      readable: Stream.repeatEffectOption(
        Effect.flatMap(Effect.mapError(read, Option.some), (chunk) => Effect.mapError(chunk, () => Option.none()))
      ),
      write: (chunk) =>
        ended || reset
          ? Effect.fail(
            new TransportError({ reason: reset ? "Reset" : "Io", message: `stream ${reset ? "was reset" : "already ended"}` })
          )
          : Effect.tryPromise({ try: () => writer.write(chunk), catch: (e) => failure("write", e) }),
      end: Effect.suspend(() => {
        if (ended || reset) return Effect.void
        ended = true
        return Effect.promise(() => writer.close().catch(() => undefined))
      }),
      reset: Effect.suspend(() => {
        if (reset) return Effect.void
        reset = true
        // Cancel reading (STOP_SENDING) unless the peer already finished, abort writing (RESET_STREAM) unless we
        // ended it. Both are no-ops on a side that is already closed; their rejections are expected and dropped.
        return Effect.promise(() =>
          Promise.all([
            reader.cancel(localReset).catch(() => undefined),
            ended ? Promise.resolve() : writer.abort(localReset).catch(() => undefined)
          ])
        ).pipe(Effect.asVoid)
      })
    }
  }

  const closedFailure = Effect.flatMap(
    Deferred.await(closedInfo),
    (info) => Effect.fail(new TransportError({ reason: "Closed", message: closedMessage(info) }))
  )

  const openBidi: Effect.Effect<BidiStream, TransportError> = Effect.suspend(() => {
    const closing = closingError()
    if (closing !== undefined) return Effect.fail(closing)
    if (internals(quic).conn.peerStreamsLeftBidi() === 0) {
      // Wait for the peer to grant more streams (MAX_STREAMS) rather than corrupt the library's stream ids.
      return Effect.zipRight(Effect.sleep(Duration.millis(1)), openBidi)
    }
    return Effect.try({
      try: () => wrapStream(quic.newStream("bidi")),
      catch: (e) => closingError() ?? failure("write", e)
    })
  })

  const close = (options: CloseOptions = {}): Effect.Effect<void> =>
    Effect.suspend(() => {
      const code = options.code ?? 0
      const reason = options.reason ?? ""
      if (options.drainTimeout === undefined) {
        return Effect.promise(() => release({ force: true, code, reason }).catch(() => undefined))
      }
      // Graceful: wait for open streams to finish; at the deadline reset them, which lets the graceful stop finish.
      const graceful = release({ force: false, code, reason }).catch(() => undefined)
      // Interruptible: close often runs in a finalizer, where the timeout could not otherwise cut the wait short.
      return Effect.promise(() => graceful).pipe(
        Effect.interruptible,
        Effect.timeout(options.drainTimeout),
        Effect.catchTag("TimeoutException", () =>
          Effect.zipRight(
            Effect.sync(() => quic.destroyStreams(localReset)),
            Effect.promise(() => graceful)
          ))
      )
    })

  const meta = quic.meta()
  return {
    side,
    alpn: negotiatedAlpn(quic),
    remoteAddress: { host: meta.remoteHost, port: meta.remotePort } satisfies Address,
    peerFingerprint: Option.flatMap(Option.fromNullable(quic.getRemoteCertsChain()[0]), Tls.fingerprint),
    openBidi,
    acceptBidi: Effect.raceFirst(Effect.map(Queue.take(incoming), wrapStream), closedFailure),
    identity: identity.get,
    setIdentity: identity.set,
    close,
    closed: Deferred.await(closedInfo),
    destroyStreams: Effect.sync(() => quic.destroyStreams(localReset))
  }
}
