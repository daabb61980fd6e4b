/**
 * Outbound call-protocol connections (SPEC §9): `connect(address, credentials)` opens a connection that can call the
 * remote and, symmetrically, serve the remote's calls.
 *
 * Addresses are URLs: `quic://HOST:PORT`, `ws://HOST:PORT`, `wss://HOST:PORT`.
 *
 * Credentials: our TLS identity (sent as the client certificate; default an ephemeral self-signed one), an optional
 * bearer token (sent as `auth_token` on every request, and on the WebSocket upgrade), and the remote's expected
 * fingerprint when it is a known peer. The server is verified as SPEC §3 says: a pinned fingerprint must match;
 * without a pin an X.509 certificate must pass CA verification; an unknown Ed25519 self-signed server fails closed.
 */
import { Context, Effect, Layer, Option } from "effect"
import type { Duration, Redacted, Scope } from "effect"
import * as Connection from "../call/Connection.js"
import type { OperationSource } from "../call/Dispatcher.js"
import * as StreamTransport from "../call/StreamTransport.js"
import type { CallTransport } from "../call/Transport.js"
import * as EndpointError from "../errors/EndpointError.js"
import { compact } from "../internal/compact.js"
import * as Quic from "../layers/quic/Lazy.js"
import * as WebSocket from "../layers/ws/WebSocket.js"
import type { Identity } from "../schema/Identity.js"
import { ALPN, identify } from "./CallProtocol.js"
import type { Authenticator } from "./CallProtocol.js"
import type { Address } from "./Endpoint.js"
import type { TlsIdentity } from "./Tls.js"

/** A parsed `quic://`, `ws://` or `wss://` address. */
export interface ParsedAddress {
  readonly scheme: "quic" | "ws" | "wss"
  readonly host: string
  readonly port: number
}

/** Parse an address URL; a clear `Config` error says what is wrong. */
export const parseAddress = (address: string): Effect.Effect<ParsedAddress, EndpointError.EndpointError> =>
  Effect.suspend(() => {
    const bad = (why: string) =>
      Effect.fail(EndpointError.make("Config", `invalid address ${JSON.stringify(address)}: ${why}`))
    let url: URL
    try {
      url = new URL(address)
    } catch {
      return bad("expected quic://HOST:PORT, ws://HOST:PORT or wss://HOST:PORT")
    }
    const scheme = url.protocol.slice(0, -1)
    if (scheme !== "quic" && scheme !== "ws" && scheme !== "wss") {
      return bad(`unknown scheme ${JSON.stringify(url.protocol)} (expected quic, ws or wss)`)
    }
    if (url.port === "") return bad("a port is required")
    if (url.pathname !== "" && url.pathname !== "/") return bad("no path is allowed")
    return Effect.succeed({ scheme, host: url.hostname.replace(/^\[(.*)\]$/, "$1"), port: Number(url.port) })
  })

/** Format an address back to its URL. */
export const formatAddress = (address: ParsedAddress): string =>
  `${address.scheme}://${address.host.includes(":") ? `[${address.host}]` : address.host}:${address.port}`

export interface Credentials {
  /** Our TLS identity, presented as the client certificate (default: an ephemeral self-signed one). */
  readonly identity?: TlsIdentity
  /** Bearer token: `auth_token` on every request (and the WebSocket upgrade's `Authorization`). */
  readonly token?: Redacted.Redacted<string>
  /** The remote's fingerprint(s) when it is a known peer: pinned. */
  readonly expectedFingerprint?: string | ReadonlyArray<string>
  /** PEM CA certificates for an unpinned X.509 server (default: the system's). */
  readonly ca?: string | ReadonlyArray<string>
  /** The name an unpinned server's certificate must carry (default: the host). */
  readonly serverName?: string
}

export interface ConnectOptions {
  /** Operations we serve to the remote over this connection (default: discovery only). */
  readonly source?: OperationSource
  /** Extend the `ctx.env` of handlers serving the remote (the peer graph's routing; see `Dispatcher.Options`). */
  readonly extendEnv?: Connection.Options["extendEnv"]
  /** Resolves the remote's fingerprint and tokens, for calls the remote makes to us. */
  readonly authenticator?: Authenticator
  /** Failed token resolutions in the remote's calls to us before the connection is closed (default 5). */
  readonly maxAuthAttempts?: number | Effect.Effect<number>
  /** Default deadline of calls the remote makes to us (default 30 s). */
  readonly defaultTimeout?: Duration.DurationInput
  /** Give up connecting after this long (default 10 s). */
  readonly connectTimeout?: Duration.DurationInput
  /** Largest frame / message, in bytes (default 64 MiB). */
  readonly maxFrameBytes?: number
}

/** An open outbound connection: call the remote, serve it, and know who it is. */
export interface ClientConnection extends Connection.Connection {
  readonly address: ParsedAddress
  readonly remoteAddress: Address
  /** The remote's TLS fingerprint (none over plain ws://). */
  readonly peerFingerprint: Option.Option<string>
}

/** Open the transport for a parsed address. */
const dial = (
  address: ParsedAddress,
  credentials: Credentials,
  options: ConnectOptions
): Effect.Effect<{ readonly transport: CallTransport; readonly peerFingerprint: Option.Option<string> }, EndpointError.EndpointError, Scope.Scope> => {
  const tls = compact({
    identity: credentials.identity,
    expectedFingerprint: credentials.expectedFingerprint,
    ca: credentials.ca,
    serverName: credentials.serverName,
    connectTimeout: options.connectTimeout
  })
  if (address.scheme === "quic") {
    return Effect.map(
      Quic.connect({ host: address.host, port: address.port }, { alpn: ALPN, ...tls }),
      (connection) => ({
        transport: StreamTransport.make(connection, compact({ maxFrameBytes: options.maxFrameBytes })),
        peerFingerprint: connection.peerFingerprint
      })
    )
  }
  return Effect.map(
    WebSocket.connect(formatAddress(address), { ...tls, ...compact({ authToken: credentials.token, maxFrameBytes: options.maxFrameBytes }) }),
    (connected) => ({ transport: connected.transport, peerFingerprint: connected.peerFingerprint })
  )
}

/**
 * Connect to `address`. The connection lives until the scope closes or either side closes it; pending calls then fail
 * with INTERNAL "connection closed".
 */
export const connect = (
  address: string,
  credentials: Credentials = {},
  options: ConnectOptions = {}
): Effect.Effect<ClientConnection, EndpointError.EndpointError, Scope.Scope> =>
  Effect.gen(function*() {
    const parsed = yield* parseAddress(address)
    const { peerFingerprint, transport } = yield* dial(parsed, credentials, options)
    const authenticator = options.authenticator
    const identity: Effect.Effect<Option.Option<Identity>> = authenticator === undefined || Option.isNone(peerFingerprint)
      ? Effect.succeed(Option.none())
      : authenticator.resolveFingerprint(peerFingerprint.value)
    const connection = yield* Connection.make(transport, {
      identify: identify(compact({
        identity,
        resolveToken: authenticator?.resolveToken,
        maxAuthAttempts: options.maxAuthAttempts
      })),
      ...compact({
        source: options.source,
        extendEnv: options.extendEnv,
        defaultTimeout: options.defaultTimeout,
        authToken: credentials.token
      })
    })
    return { ...connection, address: parsed, remoteAddress: { host: parsed.host, port: parsed.port }, peerFingerprint }
  })

/** The client as a service, for code that takes its dependencies from the context. */
export class CallClient extends Context.Tag("alknet/CallClient")<CallClient, {
  /** See `connect`. */
  readonly connect: typeof connect
}>() {}

/** `CallClient` over QUIC and WebSocket. */
export const layer: Layer.Layer<CallClient> = Layer.succeed(CallClient, CallClient.of({ connect }))
