/**
 * The call protocol over WebSocket (SPEC §14): a listener and an outbound connect, `ws` underneath (this folder is
 * the only place that imports it).
 *
 * - `wss://` is served over TLS 1.3 with the node's TLS identity, the same fingerprint model as QUIC (SPEC §3): the
 *   server requests a client certificate but does not require one or CA-check it; the client's fingerprint is read
 *   from the certificate it presented. `ws://` (plain) is there for loopback and for TLS terminated elsewhere; it
 *   carries no fingerprints.
 * - The call protocol is served at one path, `/alknet/call` (`CALL_PATH`): an upgrade to any other path is answered
 *   HTTP 404 before anything else is looked at (no token is resolved for it), and the server keeps serving. The
 *   client dials `ws(s)://HOST:PORT/alknet/call`: an address without a path (`ws://HOST:PORT`, as peers and the CLI
 *   write it) gets the path appended; an address with another path (a reverse proxy's) is dialed as written.
 * - A bearer token may come on the upgrade request (`Authorization: Bearer …`); the listener hands it to the
 *   connection handler, which resolves it as the connection's identity.
 * - An optional gate (`admitUpgrade`) runs before each upgrade, with the client's address and bearer token: a refused
 *   client gets a plain HTTP answer (e.g. 401 for a token that resolves to nobody, 429 with `Retry-After` for an
 *   address in its auth-failure cooldown) and never a WebSocket.
 * - The client verifies the server exactly like the QUIC client: a pinned fingerprint must match (checked after the
 *   TLS handshake and before a single byte of HTTP — so the bearer token never reaches an impostor); without a pin
 *   the certificate must pass CA verification for the host name; an unknown self-signed identity fails closed.
 */
import type * as Http from "node:http"
import * as Net from "node:net"
import * as Tls from "node:tls"
import { Duration, Effect, FiberSet, Option, Redacted } from "effect"
import type { Scope } from "effect"
import { WebSocket, WebSocketServer } from "ws"
import * as Codec from "../../call/Codec.js"
import * as EndpointError from "../../errors/EndpointError.js"
import type { Address } from "../../services/Endpoint.js"
import { DEFAULT_DRAIN_TIMEOUT } from "../../services/Endpoint.js"
import * as TlsIdentity from "../../services/Tls.js"
import * as HttpServer from "../http/Server.js"
import type { UpgradeRefused } from "../http/Server.js"
import * as WebSocketTransport from "./WebSocketTransport.js"

export type { UpgradeRefused } from "../http/Server.js"

/** The path the call-protocol WebSocket is served at (and dialed, when an address has no path). */
export const CALL_PATH = "/alknet/call"

/** A WebSocket connection the listener accepted. */
export interface Accepted {
  readonly transport: WebSocketTransport.WebSocketTransport
  readonly remoteAddress: Address
  /** The client's TLS fingerprint, when it presented a certificate (wss only). */
  readonly peerFingerprint: Option.Option<string>
  /** The bearer token of the upgrade request's `Authorization` header. */
  readonly bearerToken: Option.Option<Redacted.Redacted<string>>
}

export interface ListenOptions {
  readonly host: string
  readonly port: number
  /** The TLS identity to serve `wss://` with; without one the listener is plain `ws://`. */
  readonly identity?: TlsIdentity.TlsIdentity
  /** Serves each accepted connection for its life; the socket closes when it returns. */
  readonly onConnection: (accepted: Accepted) => Effect.Effect<void, never, Scope.Scope>
  /** Largest message, in bytes (default 64 MiB). */
  readonly maxFrameBytes?: number
  /** On close, how long open calls may finish before the sockets are closed (default 2 s). */
  readonly drainTimeout?: Duration.DurationInput
  /**
   * Checked before each upgrade, with the client's address and the bearer token of its `Authorization` header, if
   * any (e.g. an address in its cooldown after too many failed authentications, a token that resolves to nobody): a
   * refusal is answered with its HTTP status (e.g. 401, 429), its message and `Retry-After`, and no WebSocket is
   * opened.
   */
  readonly admitUpgrade?: (
    remoteAddress: Address,
    bearerToken: Option.Option<Redacted.Redacted<string>>
  ) => Effect.Effect<void, UpgradeRefused>
  /**
   * Serves the plain HTTP requests that reach this server (e.g. the HTTP gateway, `layers/http/Gateway`): one port,
   * one TLS identity. Without it, a plain request is answered 426 (upgrade required).
   */
  readonly onRequest?: (request: Http.IncomingMessage, response: Http.ServerResponse) => void
}

export interface Listener {
  /** The bound address (the real port when 0 was asked for). */
  readonly address: Address
  /** `ws://HOST:PORT` or `wss://HOST:PORT` (a client dials `CALL_PATH` there: `connect` appends it). */
  readonly url: string
  /** Our TLS fingerprint (wss only). */
  readonly fingerprint: Option.Option<string>
  /** Open connections right now. */
  readonly connections: Effect.Effect<number>
}

const bearer = (header: string | undefined): Option.Option<Redacted.Redacted<string>> => {
  const match = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header)
  return match === null ? Option.none() : Option.some(Redacted.make(match[1]!))
}

/**
 * Listen for WebSocket connections. Closing the scope stops accepting, lets open calls finish within the drain
 * timeout, then closes every socket.
 */
export const listen = (options: ListenOptions): Effect.Effect<Listener, EndpointError.EndpointError, Scope.Scope> =>
  Effect.gen(function*() {
    const credentials = options.identity === undefined ? undefined : yield* TlsIdentity.load(options.identity)
    const maxFrameBytes = options.maxFrameBytes ?? Codec.DEFAULT_MAX_FRAME_BYTES
    const drainTimeout = options.drainTimeout ?? DEFAULT_DRAIN_TIMEOUT
    const fibers = yield* FiberSet.make<void, never>()
    const live = new Set<WebSocketTransport.WebSocketTransport>()
    const runFork = yield* FiberSet.runtime(fibers)<never>()

    const server = HttpServer.make(credentials)
    server.on("request", options.onRequest ?? ((_req, res) => {
      res.writeHead(426, { "content-type": "text/plain", connection: "close", upgrade: "websocket" })
      res.end("alknet/call is served over WebSocket: upgrade required\n")
    }))
    const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: maxFrameBytes })

    const serve = (socket: WebSocket, request: Http.IncomingMessage) => {
      const tlsSocket = request.socket as Tls.TLSSocket
      const peerCertificate = credentials === undefined ? undefined : tlsSocket.getPeerCertificate(true)
      const peerFingerprint = peerCertificate?.raw === undefined
        ? Option.none<string>()
        : TlsIdentity.fingerprint(peerCertificate.raw)
      const remoteAddress = { host: request.socket.remoteAddress ?? "", port: request.socket.remotePort ?? 0 }
      const connection = Effect.gen(function*() {
        const transport = yield* WebSocketTransport.make(socket, { maxFrameBytes })
        live.add(transport)
        yield* Effect.addFinalizer(() => Effect.sync(() => live.delete(transport)))
        yield* options.onConnection({ transport, remoteAddress, peerFingerprint, bearerToken: bearer(request.headers.authorization) })
          .pipe(Effect.raceFirst(Effect.asVoid(transport.closed)))
      }).pipe(
        Effect.scoped,
        Effect.catchAllCause((cause) => Effect.logError("WebSocket connection handler failed", cause)),
        Effect.annotateLogs({ remote: `${remoteAddress.host}:${remoteAddress.port}` })
      )
      runFork(connection)
    }

    server.on("upgrade", (request, socket, head) => {
      const url = request.url ?? "/"
      const query = url.indexOf("?")
      if ((query < 0 ? url : url.slice(0, query)) !== CALL_PATH) {
        return HttpServer.refuseUpgrade(socket, { status: 404, message: `not found: the call protocol is served at ${CALL_PATH}` })
      }
      const upgrade = () => wss.handleUpgrade(request, socket, head, (ws) => serve(ws, request))
      if (options.admitUpgrade === undefined) return upgrade()
      const remoteAddress = { host: request.socket.remoteAddress ?? "", port: request.socket.remotePort ?? 0 }
      runFork(Effect.match(options.admitUpgrade(remoteAddress, bearer(request.headers.authorization)), {
        onFailure: (refused) => HttpServer.refuseUpgrade(socket, refused),
        onSuccess: () => (socket.destroyed ? undefined : upgrade())
      }))
    })

    const address = yield* HttpServer.bind(server, options.host, options.port, "WebSocket listener")

    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        // Stop accepting, let open calls finish (bounded), then close every socket and the server.
        server.close()
        yield* Effect.forEach([...live], (transport) => transport.drain(drainTimeout), {
          concurrency: "unbounded",
          discard: true
        })
        yield* FiberSet.clear(fibers)
        yield* Effect.async<void>((resume) => {
          server.closeAllConnections?.()
          wss.close(() => resume(Effect.void))
        })
      })
    )

    return {
      address,
      url: `${credentials === undefined ? "ws" : "wss"}://${HttpServer.hostForUrl(address.host)}:${address.port}`,
      fingerprint: credentials === undefined ? Option.none() : Option.some(credentials.fingerprint),
      connections: Effect.sync(() => live.size)
    }
  })

export interface ConnectOptions {
  /** Our TLS identity, sent as the client certificate over wss (default: an ephemeral self-signed one). */
  readonly identity?: TlsIdentity.TlsIdentity
  /** The server's fingerprint(s) when it is a known peer: pinned, anything else fails (wss only). */
  readonly expectedFingerprint?: string | ReadonlyArray<string>
  /** PEM CA certificates to verify an unpinned server against (default: the system's). */
  readonly ca?: string | ReadonlyArray<string>
  /** Name the server's certificate must carry when verified by CA (default: the host). */
  readonly serverName?: string
  /** Bearer token sent on the upgrade request (`Authorization: Bearer …`). */
  readonly authToken?: Redacted.Redacted<string>
  /** Largest message, in bytes (default 64 MiB). */
  readonly maxFrameBytes?: number
  /** Give up connecting after this long (default 10 s). */
  readonly connectTimeout?: Duration.DurationInput
}

export interface Connected {
  readonly transport: WebSocketTransport.WebSocketTransport
  readonly remoteAddress: Address
  /** The server's TLS fingerprint (wss only). */
  readonly peerFingerprint: Option.Option<string>
}

const ephemeralCredentials = Effect.runSync(Effect.cached(TlsIdentity.load(TlsIdentity.SelfSigned)))

const isIp = (host: string) => Net.isIP(host) !== 0

/** One TLS context per client identity (parsing the key and certificate costs more than the handshake itself). */
const clientContexts = new WeakMap<TlsIdentity.TlsCredentials, Tls.SecureContext>()
const clientContext = (credentials: TlsIdentity.TlsCredentials): Tls.SecureContext => {
  let context = clientContexts.get(credentials)
  if (context === undefined) {
    context = Tls.createSecureContext({
      cert: credentials.certificatePem,
      key: Redacted.value(credentials.privateKeyPem),
      minVersion: "TLSv1.3"
    })
    clientContexts.set(credentials, context)
  }
  return context
}

/** Open a TLS connection and verify the server before anything else is sent on it. */
const connectTls = (
  address: Address,
  options: ConnectOptions,
  credentials: TlsIdentity.TlsCredentials
): Effect.Effect<{ readonly socket: Tls.TLSSocket; readonly fingerprint: Option.Option<string> }, EndpointError.EndpointError> => {
  const target = `${address.host}:${address.port}`
  const pinned = options.expectedFingerprint === undefined
    ? []
    : typeof options.expectedFingerprint === "string"
    ? [options.expectedFingerprint]
    : options.expectedFingerprint
  const serverName = options.serverName ?? address.host
  return Effect.async((resume) => {
    const socket = Tls.connect({
      host: address.host,
      port: address.port,
      ...(isIp(serverName) ? {} : { servername: serverName }),
      ...(options.ca === undefined
        ? { secureContext: clientContext(credentials) }
        : { cert: credentials.certificatePem, key: Redacted.value(credentials.privateKeyPem) }),
      minVersion: "TLSv1.3",
      ALPNProtocols: ["http/1.1"],
      // With a pin, the chain is not CA-checked: the pin is checked below instead, before any byte is sent.
      rejectUnauthorized: pinned.length === 0,
      ...(options.ca === undefined ? {} : { ca: typeof options.ca === "string" ? options.ca : [...options.ca] }),
      checkServerIdentity: (host, certificate) =>
        pinned.length > 0 ? undefined : Tls.checkServerIdentity(isIp(serverName) ? host : serverName, certificate)
    })
    // Small writes (the upgrade request, single envelopes) go out at once: with Nagle each waited for an ACK.
    socket.setNoDelay(true)
    const fail = (error: EndpointError.EndpointError) => {
      socket.destroy()
      resume(Effect.fail(error))
    }
    socket.once("secureConnect", () => {
      socket.off("error", onError)
      const raw = socket.getPeerCertificate(true)?.raw
      const fingerprint = raw === undefined ? Option.none<string>() : TlsIdentity.fingerprint(raw)
      if (pinned.length > 0) {
        if (Option.isNone(fingerprint) || !pinned.includes(fingerprint.value)) {
          return fail(EndpointError.make(
            "FingerprintMismatch",
            `server ${target} presented ${Option.getOrElse(fingerprint, () => "no usable certificate")}, which is not ` +
              `the pinned ${pinned.join(" or ")}`
          ))
        }
      } else if (!socket.authorized) {
        return fail(EndpointError.make("Untrusted", `the certificate of server ${target} is not trusted`))
      }
      resume(Effect.succeed({ socket, fingerprint }))
    })
    const onError = (error: NodeJS.ErrnoException) => {
      const code = error.code ?? ""
      if (/CERT|SELF_SIGNED|UNABLE_TO|ERR_TLS_CERT_ALTNAME/.test(code)) {
        return fail(EndpointError.make(
          "Untrusted",
          `the certificate of server ${target} is not trusted (${code}): not signed by a trusted CA for this name, or a ` +
            `self-signed identity; pin its fingerprint to connect to a known peer`
        ))
      }
      fail(EndpointError.make("Connect", `cannot connect to ${target}: ${error.message}`))
    }
    socket.once("error", onError)
    return Effect.sync(() => socket.destroy())
  })
}

/** Parse `ws://HOST:PORT` / `wss://HOST:PORT`: without a path the URL gets `CALL_PATH`; another path is kept. */
export const parseUrl = (url: string): Effect.Effect<{ readonly secure: boolean; readonly address: Address; readonly url: URL }, EndpointError.EndpointError> =>
  Effect.suspend(() => {
    let parsed: URL
    try {
      parsed = new URL(url)
    } catch {
      return Effect.fail(EndpointError.make("Config", `not a WebSocket address: ${JSON.stringify(url)}`))
    }
    if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
      return Effect.fail(EndpointError.make("Config", `not a WebSocket address (ws:// or wss://): ${JSON.stringify(url)}`))
    }
    const secure = parsed.protocol === "wss:"
    const host = parsed.hostname.replace(/^\[(.*)\]$/, "$1")
    const port = parsed.port === "" ? (secure ? 443 : 80) : Number(parsed.port)
    if (parsed.pathname === "" || parsed.pathname === "/") parsed.pathname = CALL_PATH
    return Effect.succeed({ secure, address: { host, port }, url: parsed })
  })

/**
 * Open a call-protocol WebSocket to `url` (`ws://` or `wss://`), verified as described at the top of this module.
 * The socket is closed when the scope closes.
 */
export const connect = (url: string, options: ConnectOptions = {}): Effect.Effect<Connected, EndpointError.EndpointError, Scope.Scope> =>
  Effect.gen(function*() {
    const { address, secure, url: parsed } = yield* parseUrl(url)
    const target = `${address.host}:${address.port}`
    if (!secure && options.expectedFingerprint !== undefined) {
      return yield* EndpointError.make("Config", `a fingerprint can only be pinned over wss://, not ${url}`)
    }
    const maxFrameBytes = options.maxFrameBytes ?? Codec.DEFAULT_MAX_FRAME_BYTES
    const timeout = options.connectTimeout ?? Duration.seconds(10)
    const open = Effect.gen(function*() {
      const tls = secure
        ? yield* connectTls(
          address,
          options,
          options.identity === undefined ? yield* ephemeralCredentials : yield* TlsIdentity.load(options.identity)
        )
        : undefined
      const socket = yield* Effect.async<WebSocket, EndpointError.EndpointError>((resume) => {
        const ws = new WebSocket(parsed, {
          perMessageDeflate: false,
          maxPayload: maxFrameBytes,
          ...(options.authToken === undefined ? {} : { headers: { authorization: `Bearer ${Redacted.value(options.authToken)}` } }),
          ...(tls === undefined ? {} : { createConnection: () => tls.socket })
        })
        const fail = (error: EndpointError.EndpointError) => {
          ws.removeAllListeners()
          ws.on("error", () => undefined)
          ws.terminate()
          resume(Effect.fail(error))
        }
        ws.once("open", () => {
          ws.removeAllListeners()
          resume(Effect.succeed(ws))
        })
        ws.once("unexpected-response", (_req, res) =>
          fail(EndpointError.make(
            res.statusCode === 401 || res.statusCode === 403 || res.statusCode === 429 ? "Rejected" : "Connect",
            `server ${target} refused the WebSocket upgrade: HTTP ${res.statusCode}` +
              (res.statusCode === 401 ? " (the bearer token was not accepted)" : "") +
              (res.headers["retry-after"] === undefined ? "" : ` (retry after ${res.headers["retry-after"]} s)`)
          )))
        ws.once("error", (error) => fail(EndpointError.make("Connect", `cannot connect to ${target}: ${error.message}`)))
        return Effect.sync(() => {
          ws.removeAllListeners()
          ws.on("error", () => undefined)
          ws.terminate()
        })
      })
      const transport = yield* WebSocketTransport.make(socket, { maxFrameBytes })
      return { transport, remoteAddress: address, peerFingerprint: tls?.fingerprint ?? Option.none() }
    })
    return yield* open.pipe(
      Effect.timeoutFail({
        duration: timeout,
        onTimeout: () => EndpointError.make("Connect", `timed out connecting to ${target}`)
      })
    )
  })
