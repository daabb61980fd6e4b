/**
 * The QUIC transport (@matrixai/quic): an `Endpoint` layer that listens and dispatches connections by ALPN, and
 * `connect`, which opens an outbound connection and verifies the server (SPEC §3).
 *
 * TLS:
 * - Both sides present their `Tls.TlsIdentity`. The server asks every client for a certificate and does not check
 *   it against any CA: identity is the fingerprint (`Connection.peerFingerprint`). The library cannot ask for a
 *   certificate without also requiring one (its `verifyPeer` sets FAIL_IF_NO_PEER_CERT), so `connect` always
 *   presents one: the caller's identity, or an ephemeral self-signed one that resolves to nobody.
 * - The client verifies the server by what it knows: a pinned fingerprint (`expectedFingerprint`) must match; with
 *   no pin the certificate must pass CA verification (`ca`, else the system store) for `serverName` (default: the
 *   host). An unknown Ed25519 self-signed server therefore fails closed. There is no "accept any".
 */
import { QUICClient, QUICServer, errors, events } from "@matrixai/quic"
import type { QUICConfig, QUICConnection } from "@matrixai/quic"
import Logger, { LogLevel } from "@matrixai/logger"
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto"
import { Duration, Effect, FiberSet, Layer, Option, Redacted } from "effect"
import type { Scope } from "effect"
import * as EndpointError from "../../errors/EndpointError.js"
import { Endpoint, checkHandlers, DEFAULT_DRAIN_TIMEOUT, serveConnection } from "../../services/Endpoint.js"
import type { Address, Connection, ProtocolHandler } from "../../services/Endpoint.js"
import * as Tls from "../../services/Tls.js"
import * as QuicConnection from "./QuicConnection.js"

import { defaultTuning } from "./Tuning.js"
import type { Tuning } from "./Tuning.js"

export { defaultTuning } from "./Tuning.js"
export type { Tuning } from "./Tuning.js"

const quicConfig = (tuning: Partial<Tuning> | undefined): Partial<QUICConfig> => {
  const { udpBufferSize: _, ...config } = { ...defaultTuning, ...tuning }
  return { ...config, initialMaxStreamDataUni: 0, initialMaxStreamsUni: 0 }
}
const udpBufferSize = (tuning: Partial<Tuning> | undefined) => tuning?.udpBufferSize ?? defaultTuning.udpBufferSize

/** The library logs every connection event; we surface what matters as typed errors instead. */
const logger = new Logger("alknet/quic", LogLevel.SILENT)

const toArrayBuffer = (bytes: Buffer): ArrayBuffer =>
  bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer

/** Retry tokens and connection ids: HMAC-SHA256 under a per-endpoint random key. */
const serverCrypto = () => ({
  key: toArrayBuffer(randomBytes(32)),
  ops: {
    sign: async (key: ArrayBuffer, data: ArrayBuffer) =>
      toArrayBuffer(createHmac("sha256", Buffer.from(key)).update(Buffer.from(data)).digest()),
    verify: async (key: ArrayBuffer, data: ArrayBuffer, sig: ArrayBuffer) => {
      const expected = createHmac("sha256", Buffer.from(key)).update(Buffer.from(data)).digest()
      return sig.byteLength === expected.length && timingSafeEqual(expected, Buffer.from(sig))
    }
  }
})
const clientCrypto = {
  ops: { randomBytes: async (data: ArrayBuffer) => void randomBytes(data.byteLength).copy(Buffer.from(data)) }
}

const CERTIFICATE_REQUIRED = 0x100 + 116
const BAD_CERTIFICATE = 0x100 + 42

/** Server side: any parseable certificate is accepted; who it is gets decided by its fingerprint. */
const acceptAnyClientCertificate = async (certs: Array<Uint8Array>) => {
  const leaf = certs[0]
  if (leaf === undefined) return CERTIFICATE_REQUIRED
  return Option.isSome(Tls.fingerprint(leaf)) ? undefined : BAD_CERTIFICATE
}

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
    const alpns = Object.keys(options.handlers)
    const drainTimeout = options.drainTimeout ?? DEFAULT_DRAIN_TIMEOUT
    const credentials = yield* Tls.load(options.identity)
    const live = new Set<QuicConnection.QuicConnection>()
    // Closed after the server (scope finalizers run in reverse): interrupts any handler still running.
    const run = yield* FiberSet.makeRuntime<never, void, never>()

    const serve = (quic: QUICConnection) => {
      const connection = QuicConnection.make(
        quic,
        "server",
        ({ force, code, reason }) => quic.stop({ isApp: true, errorCode: code, reason: Buffer.from(reason), force })
      )
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

    const server = new QUICServer({
      crypto: serverCrypto(),
      config: {
        ...quicConfig(options.tuning),
        key: Redacted.value(credentials.privateKeyPem),
        cert: credentials.certificatePem,
        verifyPeer: true,
        verifyCallback: acceptAnyClientCertificate,
        applicationProtos: alpns
      },
      codeToReason: QuicConnection.codeToReason,
      reasonToCode: QuicConnection.reasonToCode,
      logger
    })
    const onConnection = (event: events.EventQUICServerConnection) => serve(event.detail)

    yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: async () => {
          server.addEventListener(events.EventQUICServerConnection.name, onConnection as QuicConnection.Listener)
          await server.start({ host: options.host ?? "127.0.0.1", port: options.port ?? 0 })
          QuicConnection.setUdpBufferSize(server, udpBufferSize(options.tuning))
        },
        catch: (e) =>
          EndpointError.make(
            "Bind",
            `cannot listen on ${options.host ?? "127.0.0.1"}:${options.port ?? 0}: ${e instanceof Error ? e.message : String(e)}`
          )
      }),
      () =>
        Effect.gen(function*() {
          // Graceful stop: no new connections or streams; open streams finish. At the deadline, reset them.
          const stopping = server.stop({ isApp: true, errorCode: 0, force: false }).catch(() => undefined)
          // Interruptible so the timeout can cut the wait short inside this (uninterruptible) finalizer.
          const drained = yield* Effect.promise(() => stopping).pipe(
            Effect.interruptible,
            Effect.timeout(drainTimeout),
            Effect.option
          )
          if (Option.isNone(drained)) {
            for (const connection of live) yield* connection.destroyStreams
            yield* Effect.promise(() => stopping)
          }
          server.removeEventListener(events.EventQUICServerConnection.name, onConnection as QuicConnection.Listener)
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
  if (error instanceof errors.ErrorQUICConnectionPeerTLS) {
    const info = QuicConnection.closeInfo(error)
    return info.code === 0x100 + 120
      ? EndpointError.make("AlpnRefused", `server ${target} does not serve ALPN ${JSON.stringify(alpn)}`)
      : EndpointError.make("Rejected", `server ${target} refused the connection: ${info.reason}`)
  }
  if (error instanceof errors.ErrorQUICConnectionLocalTLS) {
    return EndpointError.make(
      "Untrusted",
      `the certificate of server ${target} is not trusted (not signed by a trusted CA for this name, or a self-signed ` +
        `identity); pin its fingerprint with expectedFingerprint to connect to a known peer`
    )
  }
  if (error instanceof errors.ErrorQUICClientCreateTimeout || error instanceof errors.ErrorQUICConnectionStartTimeout) {
    return EndpointError.make("Connect", `timed out connecting to ${target}`)
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
    const credentials = options.identity === undefined ? yield* ephemeralCredentials : yield* Tls.load(options.identity)
    const pinned = options.expectedFingerprint === undefined
      ? []
      : typeof options.expectedFingerprint === "string"
      ? [options.expectedFingerprint]
      : options.expectedFingerprint
    let mismatch: string | undefined
    const verification: Partial<QUICConfig> = pinned.length > 0
      ? {
        verifyCallback: async (certs: Array<Uint8Array>) => {
          const presented = Option.flatMap(Option.fromNullable(certs[0]), Tls.fingerprint)
          if (Option.isSome(presented) && pinned.includes(presented.value)) return undefined
          mismatch = Option.getOrElse(presented, () => "no usable certificate")
          return BAD_CERTIFICATE
        }
      }
      : options.ca === undefined
      ? {}
      : { ca: typeof options.ca === "string" ? options.ca : [...options.ca] }
    const timeout = Duration.toMillis(options.connectTimeout ?? Duration.seconds(10))

    const client = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: (signal) =>
          QUICClient.createQUICClient({
            host: address.host,
            port: address.port,
            serverName: options.serverName ?? address.host,
            localHost: address.host.includes(":") ? "::" : "0.0.0.0",
            crypto: clientCrypto,
            config: {
              ...quicConfig(options.tuning),
              ...verification,
              key: Redacted.value(credentials.privateKeyPem),
              cert: credentials.certificatePem,
              verifyPeer: true,
              applicationProtos: [options.alpn]
            },
            codeToReason: QuicConnection.codeToReason,
            reasonToCode: QuicConnection.reasonToCode,
            logger
          }, { timer: timeout, signal }),
        catch: (e) => connectError(address, options.alpn, e, mismatch, pinned)
      }),
      (client) => Effect.promise(() => client.destroy({ force: true }).catch(() => undefined))
    )
    QuicConnection.setUdpBufferSize(client, udpBufferSize(options.tuning))
    return QuicConnection.make(
      client.connection,
      "client",
      ({ force, code, reason }) => client.destroy({ isApp: true, errorCode: code, reason: Buffer.from(reason), force })
    )
  })
