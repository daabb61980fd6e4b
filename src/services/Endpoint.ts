/**
 * The endpoint: a listener that accepts connections and hands each one, by its negotiated ALPN, to the protocol
 * handler registered for it (SPEC §3).
 *
 * This module is transport-neutral: `Connection` and `BidiStream` are what every transport provides (QUIC in
 * `layers/quic`; others later), and `serveConnection` is the per-connection lifecycle all of them share.
 *
 * - Handlers are fixed at startup; the TLS handshake offers exactly their ALPNs, so a connection asking for any
 *   other protocol is refused during the handshake and never reaches application code.
 * - Every accepted connection runs in its own `Scope` and fiber. The handler runs for the connection's life: it is
 *   interrupted when the connection closes, and the connection is closed (gracefully) when the handler returns.
 * - Closing the endpoint stops accepting, lets open streams finish within the drain timeout (default 2 s), then
 *   resets what is left and closes every connection.
 */
import { Cause, Context, Duration, Effect, Option, Ref, Stream } from "effect"
import type { Scope } from "effect"
import type { TransportError } from "../errors/TransportError.js"
import type { Identity } from "../schema/Identity.js"

/** A socket address. */
export interface Address {
  readonly host: string
  readonly port: number
}

/**
 * One bidirectional stream of bytes. Reads and writes are each issued one at a time by their user.
 *
 * Errors (`TransportError`): `Reset` when the peer reset or stopped this stream (or we reset it), `Closed` when the
 * connection is gone, `Io` otherwise.
 */
export interface BidiStream {
  /** The transport's stream id, for logs. */
  readonly id: number
  /** The next chunk the peer wrote, pulled on demand; `None` once the peer finished its side. */
  readonly read: Effect.Effect<Option.Option<Uint8Array>, TransportError>
  /** The remaining chunks as a stream, pulled on demand (built on `read`; run it once, don't mix with `read`). */
  readonly readable: Stream.Stream<Uint8Array, TransportError>
  /**
   * `read` without a fiber, for a reader that decodes where the bytes arrive (the call transport): the next chunk if
   * one is already here, `null` once the peer finished its side, `undefined` when nothing is here yet (then wait with
   * `onReadable`). Throws the `TransportError` that `read` fails with. Don't mix with `read`.
   */
  readonly tryRead: () => Uint8Array | null | undefined
  /** Call `wake` once, when `tryRead` may return something (bytes, the end, or a failure). One waiter at a time. */
  readonly onReadable: (wake: () => void) => void
  /** Write bytes; resolves once the transport accepted them (it waits while the peer's window is full). */
  readonly write: (chunk: Uint8Array) => Effect.Effect<void, TransportError>
  /** Finish our side gracefully (QUIC FIN); the peer reads to its end. Idempotent, never fails. */
  readonly end: Effect.Effect<void>
  /**
   * Abandon the stream: stop reading if the peer has not finished (QUIC STOP_SENDING) and reset our side if we did
   * not `end` it (RESET_STREAM). Idempotent, never fails. After `end` and a full read it releases nothing.
   */
  readonly reset: Effect.Effect<void>
}

/** `BidiStream.read` built on its `tryRead` / `onReadable` (for implementations). `tryRead` throws `TransportError`. */
export const readOf = (tryRead: BidiStream["tryRead"], onReadable: BidiStream["onReadable"]): BidiStream["read"] => {
  const waitReadable = Effect.async<void>((resume) => onReadable(() => resume(Effect.void)))
  const read: BidiStream["read"] = Effect.suspend(() => {
    let chunk: Uint8Array | null | undefined
    try {
      chunk = tryRead()
    } catch (e) {
      return Effect.fail(e as TransportError)
    }
    if (chunk === undefined) return Effect.zipRight(waitReadable, read)
    return Effect.succeed(chunk === null ? Option.none() : Option.some(chunk))
  })
  return read
}

/** `BidiStream.readable` built on its `read` (for implementations; build it when asked for, most readers never do). */
export const readableOf = (read: BidiStream["read"]): BidiStream["readable"] =>
  Stream.repeatEffectOption(
    Effect.flatMap(Effect.mapError(read, Option.some), (chunk) => Effect.mapError(chunk, () => Option.none()))
  )

/** How a connection ended. */
export interface ConnectionClosed {
  /** `local`: we closed it; `peer`: the peer did; `idle`: nothing was heard within the idle timeout. */
  readonly by: "local" | "peer" | "idle"
  /** The application or transport close code (QUIC: TLS alerts are 0x100 + alert). */
  readonly code: number
  /** The reason text sent with the close, or a description of a TLS failure. */
  readonly reason: string
}

export interface CloseOptions {
  /** Application close code sent to the peer (default 0). */
  readonly code?: number
  /** Reason text sent to the peer (default empty). */
  readonly reason?: string
  /**
   * Let open streams finish first, for at most this long, then reset them. Without it the close is immediate and
   * streams that are still open are reset.
   */
  readonly drainTimeout?: Duration.DurationInput
}

/** An established connection, accepted or opened. Both sides may open streams. */
export interface Connection {
  /** Whether we accepted (`server`) or opened (`client`) it. */
  readonly side: "client" | "server"
  /** The protocol the handshake settled on. */
  readonly alpn: string
  /** The peer's address. */
  readonly remoteAddress: Address
  /** The peer's TLS fingerprint (SPEC §3), when it presented a certificate. */
  readonly peerFingerprint: Option.Option<string>
  /** Open a new bidirectional stream to the peer. Fails `Closed` once the connection is closing. */
  readonly openBidi: Effect.Effect<BidiStream, TransportError>
  /** The next bidirectional stream the peer opened, in order. Fails `Closed` once the connection is closed. */
  readonly acceptBidi: Effect.Effect<BidiStream, TransportError>
  /** The identity recorded on this connection, if any (observability only, never used for access decisions). */
  readonly identity: Effect.Effect<Option.Option<Identity>>
  /** Record the connection's identity. Write-once: returns false (and changes nothing) when one is already set. */
  readonly setIdentity: (identity: Identity) => Effect.Effect<boolean>
  /** Close the connection (immediately, or draining open streams first). Idempotent. */
  readonly close: (options?: CloseOptions) => Effect.Effect<void>
  /** Wait until the connection is closed, by either side; tells how. */
  readonly closed: Effect.Effect<ConnectionClosed>
}

/**
 * Serves one protocol on a connection, for the connection's life. It runs in the connection's scope and fiber;
 * the connection closes when it returns, and it is interrupted when the connection closes first.
 */
export type ProtocolHandler = (connection: Connection) => Effect.Effect<void, never, Scope.Scope>

/** A running endpoint. */
export class Endpoint extends Context.Tag("alknet/Endpoint")<Endpoint, {
  /** The bound address (the real port when 0 was asked for). */
  readonly address: Address
  /** The ALPNs offered, one per registered handler. */
  readonly alpns: ReadonlyArray<string>
  /** Our own TLS fingerprint, as peers see it. */
  readonly fingerprint: string
  /** How many accepted connections are open right now. */
  readonly connections: Effect.Effect<number>
}>() {}

/** How long closing the endpoint lets open streams finish before resetting them. */
export const DEFAULT_DRAIN_TIMEOUT: Duration.Duration = Duration.seconds(2)

/** Check a handler registry: at least one handler, every ALPN 1–255 bytes. Returns an error message or undefined. */
export const checkHandlers = (handlers: Readonly<Record<string, ProtocolHandler>>): string | undefined => {
  const alpns = Object.keys(handlers)
  if (alpns.length === 0) return "an endpoint needs at least one protocol handler"
  const bad = alpns.find((alpn) => {
    const length = Buffer.byteLength(alpn, "utf8")
    return length === 0 || length > 255
  })
  return bad === undefined ? undefined : `ALPN ${JSON.stringify(bad)} must be 1 to 255 bytes`
}

/** A write-once identity slot for a `Connection` implementation. */
export const makeIdentitySlot: Effect.Effect<{
  readonly get: Effect.Effect<Option.Option<Identity>>
  readonly set: (identity: Identity) => Effect.Effect<boolean>
}> = Effect.map(Ref.make(Option.none<Identity>()), (ref) => ({
  get: Ref.get(ref),
  set: (identity) =>
    Ref.modify(ref, (current) => (Option.isSome(current) ? [false, current] : [true, Option.some(identity)]))
}))

/**
 * The lifecycle every transport gives an accepted connection: run `handler` in a fresh scope, interrupt it if the
 * connection closes, and when it returns close the connection, letting open streams finish within `drainTimeout`.
 * A handler defect is logged and closes this connection only.
 */
export const serveConnection = (
  handler: ProtocolHandler,
  connection: Connection,
  drainTimeout: Duration.DurationInput = DEFAULT_DRAIN_TIMEOUT
): Effect.Effect<void> =>
  Effect.scoped(handler(connection)).pipe(
    Effect.catchAllCause((cause) =>
      Cause.isInterruptedOnly(cause)
        ? Effect.void
        : Effect.logError(`protocol handler for ${connection.alpn} failed`, cause)
    ),
    Effect.raceFirst(Effect.asVoid(connection.closed)),
    Effect.ensuring(connection.close({ drainTimeout })),
    Effect.annotateLogs({ alpn: connection.alpn, remote: `${connection.remoteAddress.host}:${connection.remoteAddress.port}` })
  )
