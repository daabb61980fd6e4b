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
 *
 * The transport is chosen by layer: `connect` dials through the `Dialer` in context (as `RpcClient.Protocol` in
 * @effect/rpc), which a backend layer provides — `layers/Dialers` (QUIC, WebSocket, or both). This module knows no
 * backend. `layers/Client` is this module with a `connect` that falls back to both dialers when none is provided.
 */
import { Context, Effect, Layer, Option } from "effect"
import type { Duration, Redacted, Scope } from "effect"
import * as Connection from "../call/Connection.js"
import type { OperationSource } from "../call/Dispatcher.js"
import type { CallTransport } from "../call/Transport.js"
import * as EndpointError from "../errors/EndpointError.js"
import { compact } from "../internal/compact.js"
import * as NodeMetrics from "../observability/NodeMetrics.js"
import type { Identity } from "../schema/Identity.js"
import { identify } from "./CallProtocol.js"
import type { Authenticator } from "./CallProtocol.js"
import type { Address } from "./Endpoint.js"
import type { TlsIdentity } from "./Tls.js"

/** A parsed `quic://`, `ws://`, `wss://` or `memory://` (an in-process network, `layers/Memory`) address. */
export interface ParsedAddress {
  readonly scheme: "quic" | "ws" | "wss" | "memory"
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
    if (scheme !== "quic" && scheme !== "ws" && scheme !== "wss" && scheme !== "memory") {
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

/** What a dialer needs beside the address: the TLS side of the credentials and the connection's bounds. */
export interface DialOptions {
  /** Our TLS identity, presented as the client certificate (default: an ephemeral self-signed one). */
  readonly identity?: TlsIdentity
  /** The remote's fingerprint(s) when it is a known peer: pinned. */
  readonly expectedFingerprint?: string | ReadonlyArray<string>
  /** PEM CA certificates for an unpinned X.509 server (default: the system's). */
  readonly ca?: string | ReadonlyArray<string>
  /** The name an unpinned server's certificate must carry (default: the host). */
  readonly serverName?: string
  /** Bearer token (a WebSocket dialer sends it on the upgrade). */
  readonly token?: Redacted.Redacted<string>
  /** Give up connecting after this long (default 10 s). */
  readonly connectTimeout?: Duration.DurationInput
  /** Largest frame / message, in bytes (default 64 MiB). */
  readonly maxFrameBytes?: number
}

/** An opened transport, before the call engine runs on it. */
export interface Dialed {
  readonly transport: CallTransport
  /** The remote's TLS fingerprint (none over plain ws://). */
  readonly peerFingerprint: Option.Option<string>
}

/** How a client reaches an address: the transport backends it can dial. Provided by a backend layer. */
export class Dialer extends Context.Tag("alknet/Dialer")<Dialer, {
  /** The address schemes this dialer serves. */
  readonly schemes: ReadonlyArray<ParsedAddress["scheme"]>
  /** Open a transport to `address` (its scheme is one of `schemes`), verified as SPEC §3 says. */
  readonly dial: (address: ParsedAddress, options: DialOptions) => Effect.Effect<Dialed, EndpointError.EndpointError, Scope.Scope>
}>() {}

/** One dialer over several: each address goes to the first that serves its scheme; none → a clear `Config` error. */
export const combineDialers = (...dialers: ReadonlyArray<Dialer["Type"]>): Dialer["Type"] => {
  const schemes = [...new Set(dialers.flatMap((d) => d.schemes))]
  return Dialer.of({
    schemes,
    dial: (address, options) => {
      const dialer = dialers.find((d) => d.schemes.includes(address.scheme))
      return dialer === undefined
        ? Effect.fail(EndpointError.make(
          "Config",
          `cannot dial ${formatAddress(address)}: this client has no ${address.scheme} transport (it dials ${
            schemes.length === 0 ? "nothing" : schemes.join(", ")
          })`
        ))
        : dialer.dial(address, options)
    }
  })
}

/** Open the transport for a parsed address through the dialer. */
const dial = (
  dialer: Dialer["Type"],
  address: ParsedAddress,
  credentials: Credentials,
  options: ConnectOptions
): Effect.Effect<Dialed, EndpointError.EndpointError, Scope.Scope> =>
  dialer.schemes.includes(address.scheme)
    ? dialer.dial(address, compact({
      identity: credentials.identity,
      expectedFingerprint: credentials.expectedFingerprint,
      ca: credentials.ca,
      serverName: credentials.serverName,
      token: credentials.token,
      connectTimeout: options.connectTimeout,
      maxFrameBytes: options.maxFrameBytes
    }))
    : combineDialers(dialer).dial(address, {})

/**
 * Connect to `address` through the `Dialer` in context. The connection lives until the scope closes or either side
 * closes it; pending calls then fail with INTERNAL "connection closed".
 */
export const connect = (
  address: string,
  credentials: Credentials = {},
  options: ConnectOptions = {}
): Effect.Effect<ClientConnection, EndpointError.EndpointError, Scope.Scope | Dialer> =>
  Effect.gen(function*() {
    const parsed = yield* parseAddress(address)
    const { peerFingerprint, transport } = yield* dial(yield* Dialer, parsed, credentials, options)
    const label = parsed.scheme === "wss" ? "ws" : parsed.scheme
    const authenticator = options.authenticator
    const identity: Effect.Effect<Option.Option<Identity>> = authenticator === undefined || Option.isNone(peerFingerprint)
      ? Effect.succeed(Option.none())
      : authenticator.resolveFingerprint(peerFingerprint.value)
    const connection = yield* Connection.make(transport, {
      identify: identify(compact({
        identity,
        resolveToken: authenticator?.resolveToken,
        maxAuthAttempts: options.maxAuthAttempts,
        onAuthFailure: () => NodeMetrics.countAuthFailure(label)
      })),
      ...compact({
        source: options.source,
        extendEnv: options.extendEnv,
        defaultTimeout: options.defaultTimeout,
        authToken: credentials.token
      })
    })
    yield* NodeMetrics.trackConnection(label, connection.closed)
    return { ...connection, address: parsed, remoteAddress: { host: parsed.host, port: parsed.port }, peerFingerprint }
  })

/** The client as a service, for code that takes its dependencies from the context (its method requires nothing). */
export class CallClient extends Context.Tag("alknet/CallClient")<CallClient, {
  /** See `connect`: over the dialer the layer was built with. */
  readonly connect: (
    address: string,
    credentials?: Credentials,
    options?: ConnectOptions
  ) => Effect.Effect<ClientConnection, EndpointError.EndpointError, Scope.Scope>
}>() {}

/** `CallClient` over the `Dialer` in context (e.g. `layers/Dialers.layer` for QUIC and WebSocket). */
export const layer: Layer.Layer<CallClient, never, Dialer> = Layer.effect(
  CallClient,
  Effect.map(Dialer, (dialer) =>
    CallClient.of({
      connect: (address, credentials, options) =>
        Effect.provideService(connect(address, credentials, options), Dialer, dialer)
    }))
)
