/**
 * The QUIC transport (@matrixai/quic): an `Endpoint` layer that listens and dispatches connections by ALPN, and
 * `connect`, which opens an outbound connection and verifies the server (SPEC §3).
 *
 * TLS:
 * - Both sides present their `Tls.TlsIdentity`. The server asks every client for a certificate and does not check
 *   it against any CA: identity is the fingerprint (`Connection.peerFingerprint`). quiche's binding cannot ask for a
 *   certificate without also requiring one, so `connect` always presents one: the caller's identity, or an
 *   ephemeral self-signed one that resolves to nobody. An endpoint with `clientCertificates: "ignored"` asks for
 *   none and also serves clients that have no certificate (third-party QUIC clients; identity by bearer token).
 * - The client verifies the server by what it knows: a pinned fingerprint (`expectedFingerprint`) must match; with
 *   no pin the certificate must pass CA verification (`ca`, else the system store) for `serverName` (default: the
 *   host). An unknown Ed25519 self-signed server therefore fails closed. There is no "accept any".
 */
import { Duration, Effect, FiberSet, Layer, Option, Redacted } from "effect"
import type { Scope } from "effect"
import * as EndpointError from "../../errors/EndpointError.js"
import { Endpoint, checkHandlers, DEFAULT_DRAIN_TIMEOUT, serveConnection } from "../../services/Endpoint.js"
import type { Address, Connection, ProtocolHandler } from "../../services/Endpoint.js"
import * as Tls from "../../services/Tls.js"
import * as Driver from "./Driver.js"
import * as QuicConnection from "./QuicConnection.js"

import { defaultTuning } from "./Tuning.js"
import type { Tuning } from "./Tuning.js"

export { defaultTuning } from "./Tuning.js"
export type { Tuning } from "./Tuning.js"

const settings = (tuning: Partial<Tuning> | undefined): Tuning => ({ ...defaultTuning, ...tuning })

const driverOptions = (t: Tuning): Driver.DriverOptions => ({
  maxSendUdpPayloadSize: t.maxSendUdpPayloadSize,
  readableChunkSize: t.readableChunkSize,
  keepAliveIntervalTime: t.keepAliveIntervalTime,
  udpBufferSize: t.udpBufferSize
})

const checkTuning = (t: Tuning): string | undefined =>
  t.maxIdleTimeout !== 0 && t.keepAliveIntervalTime >= t.maxIdleTimeout
    ? `keepAliveIntervalTime (${t.keepAliveIntervalTime} ms) must be below maxIdleTimeout (${t.maxIdleTimeout} ms)`
    : undefined

const CERTIFICATE_REQUIRED = 116
const BAD_CERTIFICATE = 42

// ---------------------------------------------------------------------------------------------------------------
// Endpoint

export interface EndpointOptions {
  /** Address to listen on (default 127.0.0.1). */
  readonly host?: string
  /** Port (default 0: any free port; read the real one from `Endpoint.address`). */
  readonly port?: number
  /** Our TLS identity. */
  readonly identity: Tls.TlsIdentity
  /** ALPN → handler. Fixed for the endpoint's life; the handshake offers exactly these. */
  readonly handlers: Readonly<Record<string, ProtocolHandler>>
  /** How long closing the endpoint lets open streams finish (default 2 s). */
  readonly drainTimeout?: Duration.DurationInput
  /**
   * `required` (default): every client presents a certificate (any, checked by nobody: its fingerprint is its
   * identity); a client without one is refused in the handshake (TLS alert 116). `ignored`: no certificate is asked
   * for, so clients without one connect too, and identity comes only from bearer tokens (as on WebSocket).
   * SPEC §3's "request but do not require" is not possible through quiche's binding (it can ask without requiring only
   * by also verifying against a CA store, which refuses every self-signed client): see `Driver.makeConfig`.
   */
  readonly clientCertificates?: "required" | "ignored"
  readonly tuning?: Partial<Tuning>
}

/**
 * A QUIC endpoint: listens while the scope is open. Closing the scope stops accepting, drains open streams for up
 * to `drainTimeout`, then resets them, closes every connection and interrupts their handlers.
 */
export const makeEndpoint = (
  options: EndpointOptions
): Effect.Effect<Endpoint["Type"], EndpointError.EndpointError, Scope.Scope> =>
  Effect.gen(function*() {
    const problem = checkHandlers(options.handlers)
    if (problem !== undefined) return yield* EndpointError.make("Config", problem)
    const tuning = settings(options.tuning)
    const badTuning = checkTuning(tuning)
    if (badTuning !== undefined) return yield* EndpointError.make("Config", badTuning)
    const alpns = Object.keys(options.handlers)
    const drainTimeout = options.drainTimeout ?? DEFAULT_DRAIN_TIMEOUT
    const credentials = yield* Tls.load(options.identity)
    const live = new Set<QuicConnection.QuicConnection>()
    // Closed after the server (scope finalizers run in reverse): interrupts any handler still running.
    const run = yield* FiberSet.makeRuntime<never, void, never>()
    const clientCertificates = options.clientCertificates ?? "required"
    const host = options.host ?? "127.0.0.1"
    const port = options.port ?? 0

    const serve = (driven: Driver.QuicConnection) => {
      const connection = QuicConnection.make(driven, "server", async () => undefined)
      const handler = options.handlers[connection.alpn]
      live.add(connection)
      run(
        (handler === undefined
          // Unreachable: the handshake only completes with an offered ALPN.
          ? connection.close({ code: 0, reason: "no handler" })
          : serveConnection(handler, connection, drainTimeout)).pipe(
            Effect.ensuring(Effect.sync(() => live.delete(connection)))
          )
      )
    }

    /** Any parseable certificate is accepted (who it is gets decided by its fingerprint), and so is none. */
    const verifyClient = (driven: Driver.QuicConnection): number | undefined => {
      if (driven.native.peerCertChain()?.[0] === undefined) {
        return clientCertificates === "required" ? CERTIFICATE_REQUIRED : undefined
      }
      return Option.isSome(QuicConnection.peerFingerprint(driven)) ? undefined : BAD_CERTIFICATE
    }

    const server = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: async () => {
          const config = Driver.makeConfig({
            ...tuning,
            key: Redacted.value(credentials.privateKeyPem),
            cert: credentials.certificatePem,
            verifyPeer: clientCertificates === "required",
            allowAnyCertificate: true,
            alpns
          })
          return Driver.QuicServer.listen(
            { host, port, bufferSize: tuning.udpBufferSize },
            config,
            driverOptions(tuning),
            verifyClient,
            serve
          )
        },
        catch: (e) => EndpointError.make("Bind", `cannot listen on ${host}:${port}: ${e instanceof Error ? e.message : String(e)}`)
      }),
      (server) =>
        Effect.gen(function*() {
          // Graceful stop: no new connections or streams; open streams finish. At the deadline, reset them.
          server.stopAccepting()
          const connections = server.connections()
          // Interruptible so the timeout can cut the wait short inside this (uninterruptible) finalizer.
          yield* Effect.promise(() => Promise.all(connections.map((c) => c.drained()))).pipe(
            Effect.interruptible,
            Effect.timeout(drainTimeout),
            Effect.ignore
          )
          yield* Effect.promise(() => server.close())
        })
    )

    return Endpoint.of({
      address: { host: server.host, port: server.port },
      alpns,
      fingerprint: credentials.fingerprint,
      connections: Effect.sync(() => live.size)
    })
  })

/** The `Endpoint` service over QUIC. */
export const layerEndpoint = (options: EndpointOptions): Layer.Layer<Endpoint, EndpointError.EndpointError> =>
  Layer.scoped(Endpoint, makeEndpoint(options))

// ---------------------------------------------------------------------------------------------------------------
// Client

export interface ConnectOptions {
  /** The protocol to speak; the server must serve it. */
  readonly alpn: string
  /** Our TLS identity, sent as the client certificate (default: an ephemeral self-signed one). */
  readonly identity?: Tls.TlsIdentity
  /** The server's fingerprint(s) when it is a known peer: pinned, anything else fails. */
  readonly expectedFingerprint?: string | ReadonlyArray<string>
  /** PEM CA certificates to verify an unpinned server against (default: the system's). */
  readonly ca?: string | ReadonlyArray<string>
  /** Name the server's certificate must carry when verified by CA (default: the host). */
  readonly serverName?: string
  /** Give up connecting after this long (default 10 s). */
  readonly connectTimeout?: Duration.DurationInput
  readonly tuning?: Partial<Tuning>
}

const ephemeralCredentials = Effect.runSync(Effect.cached(Tls.load(Tls.SelfSigned)))

const connectError = (
  address: Address,
  alpn: string,
  error: unknown,
  mismatch: string | undefined,
  pinned: ReadonlyArray<string>
): EndpointError.EndpointError => {
  const target = `${address.host}:${address.port}`
  if (mismatch !== undefined) {
    return EndpointError.make(
      "FingerprintMismatch",
      `server ${target} presented ${mismatch}, which is not the pinned ${pinned.join(" or ")}`
    )
  }
  if (error === "timeout") return EndpointError.make("Connect", `timed out connecting to ${target}`)
  if (typeof error === "object" && error !== null && "by" in error) {
    const info = error as Driver.CloseInfo
    const alert = Driver.tlsAlert(info)
    if (info.by === "peer" && alert === 120) {
      return EndpointError.make("AlpnRefused", `server ${target} does not serve ALPN ${JSON.stringify(alpn)}`)
    }
    if (info.by === "local" && (info.tlsFail === true || alert !== undefined)) {
      return EndpointError.make(
        "Untrusted",
        `the certificate of server ${target} is not trusted (not signed by a trusted CA for this name, or a self-signed ` +
          `identity); pin its fingerprint with expectedFingerprint to connect to a known peer`
      )
    }
    if (info.by === "peer") {
      return EndpointError.make("Rejected", `server ${target} refused the connection: ${Driver.closeReason(info)}`)
    }
    if (info.by === "idle") return EndpointError.make("Connect", `timed out connecting to ${target}`)
    return EndpointError.make("Connect", `cannot connect to ${target}: ${Driver.closedMessage(info)}`)
  }
  return EndpointError.make("Connect", `cannot connect to ${target}: ${error instanceof Error ? error.message : String(error)}`)
}

/**
 * Open a QUIC connection to `address`, verified as described at the top of this module. The connection lives
 * until the scope closes (then it is closed, resetting open streams) or either side closes it.
 */
export const connect = (
  address: Address,
  options: ConnectOptions
): Effect.Effect<Connection, EndpointError.EndpointError, Scope.Scope> =>
  Effect.gen(function*() {
    const tuning = settings(options.tuning)
    const badTuning = checkTuning(tuning)
    if (badTuning !== undefined) return yield* EndpointError.make("Config", badTuning)
    const credentials = options.identity === undefined ? yield* ephemeralCredentials : yield* Tls.load(options.identity)
    const pinned = options.expectedFingerprint === undefined
      ? []
      : typeof options.expectedFingerprint === "string"
      ? [options.expectedFingerprint]
      : options.expectedFingerprint
    let mismatch: string | undefined
    const verifyServer = (driven: Driver.QuicConnection): number | undefined => {
      if (pinned.length === 0) return undefined // BoringSSL verified the chain and the name
      const presented = QuicConnection.peerFingerprint(driven)
      if (Option.isSome(presented) && pinned.includes(presented.value)) return undefined
      mismatch = Option.getOrElse(presented, () => "no usable certificate")
      return BAD_CERTIFICATE
    }
    const timeout = Duration.toMillis(options.connectTimeout ?? Duration.seconds(10))

    const client = yield* Effect.acquireRelease(
      // Interruptible: a connect to a peer that does not answer waits up to its timeout, and closing a scope (a node
      // shutting down while a link reconnects) must not wait for it. An interrupted connect aborts and cleans up.
      Effect.interruptible(Effect.tryPromise({
        try: (signal) =>
          Driver.connect(
            address,
            options.serverName ?? address.host,
            Driver.makeConfig({
              ...tuning,
              key: Redacted.value(credentials.privateKeyPem),
              cert: credentials.certificatePem,
              ca: pinned.length > 0 || options.ca === undefined
                ? undefined
                : typeof options.ca === "string"
                ? options.ca
                : options.ca.join("\n"),
              verifyPeer: true,
              allowAnyCertificate: pinned.length > 0,
              alpns: [options.alpn]
            }),
            driverOptions(tuning),
            verifyServer,
            timeout,
            signal
          ),
        catch: (e) => connectError(address, options.alpn, e, mismatch, pinned)
      })),
      (client) => Effect.promise(() => client.close())
    )
    return QuicConnection.make(client.connection, "client", client.close)
  })
