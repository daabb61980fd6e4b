/**
 * The node's `node:http(s)` servers, built one way for every listener that speaks HTTP: the call-protocol WebSocket
 * listener (`ws/WebSocket`, which may also mount the gateway) and the gateway's own listener (`listen` here, the
 * config's `http_listen`).
 *
 * - With a TLS identity the server is `https` over TLS 1.3 with that identity, the fingerprint model of SPEC §3: it
 *   requests a client certificate but neither requires one nor CA-checks it (who the client is comes from its key's
 *   fingerprint). Without one it is plain `http`, for loopback or behind a TLS-terminating proxy.
 * - A TLS handshake that fails or a malformed request affects that socket only; the server keeps serving.
 * - `listen` serves plain requests only: an upgrade request is answered 404 (the call protocol is served by the
 *   WebSocket listener). Closing its scope stops accepting, lets requests in flight finish within the drain timeout
 *   (default 2 s), then closes every connection.
 */
import * as Http from "node:http"
import * as Https from "node:https"
import type * as Net from "node:net"
import type { Duplex } from "node:stream"
import { Duration, Effect, Option, Redacted } from "effect"
import type { Scope } from "effect"
import * as EndpointError from "../../errors/EndpointError.js"
import type { Address } from "../../services/Endpoint.js"
import { DEFAULT_DRAIN_TIMEOUT } from "../../services/Endpoint.js"
import * as TlsIdentity from "../../services/Tls.js"

/** A `node:http` server, or `node:https` with `credentials` (the settings described at the top of this module). */
export const make = (credentials: TlsIdentity.TlsCredentials | undefined): Http.Server => {
  const server: Http.Server = credentials === undefined
    ? Http.createServer({ noDelay: true })
    : Https.createServer({
      // Small writes (the 101 answer, single envelopes, small JSON answers) go out at once: with Nagle each waited for
      // an ACK.
      noDelay: true,
      cert: credentials.certificatePem,
      key: Redacted.value(credentials.privateKeyPem),
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: "TLSv1.3"
    })
  // A TLS handshake that fails (a scanner, a client that refused our certificate) affects that socket only.
  server.on("tlsClientError", () => undefined)
  server.on("clientError", (_error, socket) => socket.destroy())
  return server
}

/** Why an upgrade is refused, as the HTTP answer says it. */
export interface UpgradeRefused {
  readonly status: number
  readonly message: string
  /** Sent as `Retry-After` (rounded up to seconds). */
  readonly retryAfterMs?: number
}

/** Answer an upgrade request with an HTTP error and close the socket. */
export const refuseUpgrade = (socket: Duplex, refused: UpgradeRefused): void => {
  const body = `${refused.message}\n`
  const headers = [
    `HTTP/1.1 ${refused.status} ${Http.STATUS_CODES[refused.status] ?? "Refused"}`,
    "Connection: close",
    "Content-Type: text/plain; charset=utf-8",
    `Content-Length: ${Buffer.byteLength(body)}`,
    ...(refused.retryAfterMs === undefined ? [] : [`Retry-After: ${Math.ceil(refused.retryAfterMs / 1000)}`])
  ]
  socket.once("finish", () => socket.destroy())
  socket.end(`${headers.join("\r\n")}\r\n\r\n${body}`)
}

/** Bind `server` to `host:port` (the real port when 0 was asked for); later server errors are logged as `what`'s. */
export const bind = (
  server: Http.Server,
  host: string,
  port: number,
  what: string
): Effect.Effect<Address, EndpointError.EndpointError> =>
  Effect.async<Address, EndpointError.EndpointError>((resume) => {
    const onError = (error: Error) =>
      resume(Effect.fail(EndpointError.make("Bind", `cannot listen on ${host}:${port}: ${error.message}`)))
    server.once("error", onError)
    server.listen(port, host, () => {
      server.off("error", onError)
      server.on("error", (error) => Effect.runFork(Effect.logError(`${what} error: ${error.message}`)))
      resume(Effect.succeed({ host, port: (server.address() as Net.AddressInfo).port }))
    })
  })

export const hostForUrl = (host: string): string => (host.includes(":") ? `[${host}]` : host)

export interface ListenOptions {
  readonly host: string
  readonly port: number
  /** Serve `https://` with this identity; without one the listener is plain `http://`. */
  readonly identity?: TlsIdentity.TlsIdentity
  /** Serves every request (e.g. the HTTP gateway's `handler`). */
  readonly onRequest: (request: Http.IncomingMessage, response: Http.ServerResponse) => void
  /** On close, how long requests in flight may finish before their connections are closed (default 2 s). */
  readonly drainTimeout?: Duration.DurationInput
}

export interface Listener {
  /** The bound address (the real port when 0 was asked for). */
  readonly address: Address
  /** `http://HOST:PORT` or `https://HOST:PORT`. */
  readonly url: string
  /** Our TLS fingerprint (https only). */
  readonly fingerprint: Option.Option<string>
}

/** Serve plain HTTP requests (no upgrades) for the life of the scope. */
export const listen = (options: ListenOptions): Effect.Effect<Listener, EndpointError.EndpointError, Scope.Scope> =>
  Effect.gen(function*() {
    const credentials = options.identity === undefined ? undefined : yield* TlsIdentity.load(options.identity)
    const drainTimeout = options.drainTimeout ?? DEFAULT_DRAIN_TIMEOUT
    const server = make(credentials)
    let closing = false
    server.on("request", (request, response) => {
      // Draining: answer, then close the connection.
      if (closing) response.setHeader("connection", "close")
      options.onRequest(request, response)
    })
    server.on("upgrade", (_request, socket) =>
      refuseUpgrade(socket, { status: 404, message: "not found: this listener serves HTTP only, no WebSocket" }))
    const address = yield* Effect.acquireRelease(
      bind(server, options.host, options.port, "HTTP listener"),
      () =>
        // Interruptible inside the finalizer, so that the drain timeout can win.
        Effect.interruptible(Effect.async<void>((resume) => {
          // Stop accepting; idle keep-alive connections go now, busy ones as soon as their request is answered (a
          // keep-alive connection would otherwise hold the close until it idles out).
          closing = true
          const sweep = setInterval(() => server.closeIdleConnections(), 20)
          server.close(() => {
            clearInterval(sweep)
            resume(Effect.void)
          })
          server.closeIdleConnections()
          return Effect.sync(() => clearInterval(sweep))
        })).pipe(
          Effect.timeout(drainTimeout),
          Effect.ignore,
          Effect.zipRight(Effect.sync(() => server.closeAllConnections()))
        )
    )
    return {
      address,
      url: `${credentials === undefined ? "http" : "https"}://${hostForUrl(address.host)}:${address.port}`,
      fingerprint: credentials === undefined ? Option.none() : Option.some(credentials.fingerprint)
    }
  })
