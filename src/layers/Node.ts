/**
 * The composition root: a node as Layers (SPEC §2).
 *
 * - `Node.layer({ home })`: the production node. The vault is unlocked from the home's mnemonic, the identity key is
 *   derived at `m/74'/0'/0'/0'`, peers / API keys / credentials live in SQLite in the home (the embedded default),
 *   and the home's config file is watched for dynamic changes. It listens on QUIC (`alknet/call`) and, optionally,
 *   WebSocket.
 * - `Node.layerMemory(...)`: the same node with in-memory stores and a static config, for tests and for embedding in
 *   a larger Effect program. Both run the same `make`.
 *
 * Who is calling is resolved from the store first, then from the config file's `peers` / `api_keys`; both change
 * while the node runs. Rate limits come from the live config: `max_connections_per_ip` gates each connection,
 * `max_auth_attempts` closes a connection after that many bad tokens, and an address with
 * `max_auth_failures_per_ip` failed authentications (bad upgrade bearer tokens, bad `auth_token`s) within
 * `auth_failure_window_ms` is refused for `auth_block_ms`: QUIC connections are closed at admission, WebSocket
 * upgrades answered HTTP 429 — whoever connects from that address, good clients included.
 *
 * Built-in operations, beside the discovery ones: `node/info`, `node/ping`, `node/whoami`.
 *
 * A caller sees only what it could call; the node's internals need the scope `alknet:admin` (`ADMIN_SCOPE`):
 * `node/info` answers `{id, fingerprint, version}` to everyone else, and uptime, transports and outbound peers (with
 * addresses, states and last errors) only to an admin; `services/list-peers` shows an admin every operation of every
 * peer, everyone else only the External ones whose access control they meet. The node's own key is an admin (the CLI
 * run with the node's `--home`, e.g. `alknet status`); grant the scope to other peers or API keys in their `scopes`.
 *
 * Every node owns a peer graph (`PeerCompositeEnv`) over its registry: handlers' `ctx.env` routes through it, and
 * the node keeps a reconnecting link to each outbound peer of the live config (plus `Options.connect`). Operations a
 * peer is imported with `export_as: "external"` are served on the wire under two names:
 * - the plain name (`demo/echo`): the first connected peer that serves it (PeerRef.Any); the node's own operations
 *   always win;
 * - the pinned name `PEER_ID/demo/echo`: that peer only (PeerRef.Specific).
 * A call routed to a peer that is away fails at once with INTERNAL `peer PEER_ID is not connected`. `node/info`
 * reports each outbound peer's state; `services/list-peers` is served when the config says `list_peers: true`.
 */
import { Context, Data, Duration, Effect, Layer, Option, Schema, Stream } from "effect"
import type { Redacted, Scope } from "effect"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as Discovery from "../call/Discovery.js"
import type { OperationSource } from "../call/Dispatcher.js"
import * as Composite from "../peer/Composite.js"
import * as Outbound from "../peer/Outbound.js"
import * as CallProtocol from "../services/CallProtocol.js"
import * as CredentialStore from "../services/CredentialStore.js"
import type { Address } from "../services/Endpoint.js"
import * as IdentityProvider from "../services/IdentityProvider.js"
import * as IdentityStore from "../services/IdentityStore.js"
import { NodeConfig } from "../services/NodeConfig.js"
import * as NodeConfigModule from "../services/NodeConfig.js"
import * as Operation from "../services/Operation.js"
import type { HandlerRegistration } from "../services/Operation.js"
import type * as PeerCompositeEnv from "../services/PeerCompositeEnv.js"
import * as OperationRegistry from "../services/OperationRegistry.js"
import * as RateLimit from "../services/RateLimit.js"
import * as Tls from "../services/Tls.js"
import * as Vault from "../services/Vault.js"
import type { Config, OutboundPeer } from "../schema/Config.js"
import { ADMIN_SCOPE, Identity, isAdmin } from "../schema/Identity.js"
import * as ConfigFile from "./ConfigFile.js"
import * as Gateway from "./http/Gateway.js"
import * as NodeHome from "./NodeHome.js"
import * as Quic from "./quic/Lazy.js"
import * as SqliteStore from "./sqlite/SqliteStore.js"
import * as WebSocket from "./ws/WebSocket.js"

/** The package version, reported by `node/info`. */
export const VERSION = "0.1.0"

/** A node that cannot start; `message` says why in one line. */
export class NodeError extends Data.TaggedError("NodeError")<{
  readonly reason: "Config" | "Home" | "Vault" | "Store" | "Identity" | "Listen" | "Registry"
  readonly message: string
}> {}

const fail = (reason: NodeError["reason"]) => (error: { readonly message: string }) =>
  new NodeError({ reason, message: error.message })

export interface Transport {
  readonly kind: "quic" | "ws" | "wss"
  /** `quic://HOST:PORT`, `ws://…`, `wss://…` */
  readonly address: string
}

/** What `node/info` answers a caller without `alknet:admin` (anonymous included): who the node is, nothing more. */
export const PublicNodeInfo = Schema.Struct({
  id: Schema.String,
  fingerprint: Schema.String,
  version: Schema.String
})
export type PublicNodeInfo = typeof PublicNodeInfo.Type

/** What `node/info` answers a caller with `alknet:admin` (and what `Node.info` returns in process). */
export const NodeInfo = Schema.Struct({
  ...PublicNodeInfo.fields,
  uptime_ms: Schema.Number,
  transports: Schema.Array(Schema.Struct({ kind: Schema.Literal("quic", "ws", "wss"), address: Schema.String })),
  /** The outbound peers and how they are doing. */
  peers: Schema.Array(Outbound.PeerInfo)
})
export type NodeInfo = typeof NodeInfo.Type

/** A running node. */
export class Node extends Context.Tag("alknet/Node")<Node, {
  /** The node's id (its fingerprint unless the config names it). */
  readonly id: string
  /** The node's TLS fingerprint, as peers see it. */
  readonly fingerprint: string
  /** Where it listens, QUIC first. */
  readonly transports: ReadonlyArray<Transport>
  /** The operations it serves (built-ins, discovery, the user's, and peers' exported ones). */
  readonly source: OperationSource
  /** Its peer graph. */
  readonly graph: PeerCompositeEnv.Service
  readonly info: Effect.Effect<NodeInfo>
}>() {}

export interface WebSocketOptions {
  readonly host: string
  readonly port: number
  /** Serve `wss://` with the node's TLS identity (default true); false serves plain `ws://`. */
  readonly tls?: boolean
  /**
   * Also serve the HTTP gateway (call over HTTP, subscribe over SSE, `/openapi.json`; `layers/http/Gateway`) on this
   * listener's port: `true`, or its limits.
   */
  readonly gateway?: boolean | GatewayOptions
}

/** The HTTP gateway's limits (defaults: 1 MiB bodies, 30 s per call, 64 calls per batch). */
export interface GatewayOptions {
  readonly maxBodyBytes?: number
  readonly timeout?: Duration.DurationInput
  readonly maxBatch?: number
}

export interface Options {
  /** The user's operations, served beside the built-ins. */
  readonly operations?: ReadonlyArray<HandlerRegistration>
  /** Listen here instead of the config's `listen`. */
  readonly listen?: Address
  /** Also serve the call protocol over WebSocket. */
  readonly webSocket?: WebSocketOptions
  /** Outbound peers besides the config's `outbound` (e.g. `alknet node --connect`), for the node's life. */
  readonly connect?: ReadonlyArray<OutboundPeer>
}

const hostForUrl = (host: string) => (host.includes(":") ? `[${host}]` : host)

// ---------------------------------------------------------------------------------------------------------------
// Built-in operations

const WhoAmI = Schema.Struct({ identity: Schema.NullOr(Identity) })

const builtins = (info: Effect.Effect<NodeInfo>): ReadonlyArray<HandlerRegistration> => [
  Operation.query({
    name: "node/info",
    description: "This node: id, fingerprint and version; with the scope alknet:admin also its uptime, where it " +
      "listens and its outbound peers.",
    input: Schema.Unknown,
    output: Schema.Union(NodeInfo, PublicNodeInfo),
    handler: (_, ctx) =>
      isAdmin(ctx.identity)
        ? info
        : Effect.map(info, ({ fingerprint, id, version }): PublicNodeInfo => ({ id, fingerprint, version }))
  }),
  Operation.query({
    name: "node/ping",
    description: "Answers pong: a liveness check.",
    input: Schema.Unknown,
    output: Schema.Struct({ pong: Schema.Literal(true), time_ms: Schema.Number }),
    handler: () => Effect.map(Effect.clockWith((clock) => clock.currentTimeMillis), (time_ms) => ({ pong: true as const, time_ms }))
  }),
  Operation.query({
    name: "node/whoami",
    description: "The caller's identity as this node resolved it for this request.",
    input: Schema.Unknown,
    output: WhoAmI,
    handler: (_, ctx) => Effect.succeed({ identity: Option.getOrNull(ctx.identity) })
  })
]

// ---------------------------------------------------------------------------------------------------------------
// Make

/** The first provider that knows the fingerprint or token wins. */
const firstOf = (...providers: ReadonlyArray<IdentityProvider.Service>): CallProtocol.Authenticator => {
  const first = <A>(lookup: (p: IdentityProvider.Service) => Effect.Effect<Option.Option<A>>) =>
    Effect.suspend(() => {
      const step = (i: number): Effect.Effect<Option.Option<A>> =>
        i >= providers.length
          ? Effect.succeed(Option.none())
          : Effect.flatMap(lookup(providers[i]!), (found) => (Option.isSome(found) ? Effect.succeed(found) : step(i + 1)))
      return step(0)
    })
  return {
    resolveFingerprint: (fingerprint) => first((p) => p.resolveFingerprint(fingerprint)),
    resolveToken: (token) => first((p) => p.resolveToken(token))
  }
}

/**
 * The node's own key is its owner (the CLI run with the node's `--home` presents it): it resolves to `alknet:admin`,
 * added to whatever the providers grant that fingerprint (or as `{id: fingerprint}` when they know nothing of it).
 */
const withOwner = (fingerprint: string, authenticator: CallProtocol.Authenticator): CallProtocol.Authenticator => ({
  resolveFingerprint: (presented) =>
    presented !== fingerprint
      ? authenticator.resolveFingerprint(presented)
      : Effect.map(authenticator.resolveFingerprint(presented), (found) =>
        Option.some(Option.match(found, {
          onNone: (): Identity => ({ id: fingerprint, scopes: [ADMIN_SCOPE], resources: {} }),
          onSome: (identity): Identity =>
            identity.scopes.includes(ADMIN_SCOPE) ? identity : { ...identity, scopes: [...identity.scopes, ADMIN_SCOPE] }
        }))),
  resolveToken: authenticator.resolveToken
})

/** The TLS identity a config names: the vault's node key unless it names another (also a client's, e.g. the CLI's). */
export const tlsIdentityOf = (tls: Config["tls"]): Effect.Effect<Tls.TlsIdentity, NodeError, Vault.Vault> =>
  Effect.gen(function*() {
    switch (tls.type) {
      case "raw_key":
        if (tls.key_file !== undefined) return yield* Effect.mapError(Tls.rawKeyFromPemFile(tls.key_file), fail("Identity"))
        return Tls.RawKey((yield* Effect.mapError(Vault.nodeIdentity, fail("Vault"))).privateKey)
      case "x509":
        return Tls.X509(tls.cert_file, tls.key_file)
      case "self_signed":
        return Tls.SelfSigned
    }
  })

const tlsIdentity = Effect.flatMap(NodeConfig, (config) => tlsIdentityOf(config.static.tls))

/**
 * Start a node from the services in context: an unlocked `Vault`, `NodeConfig` and the `IdentityStore`. It serves until the scope closes, then drains (the config's `drain_timeout_ms`).
 */
export const make = (
  options: Options = {}
): Effect.Effect<
  Node["Type"],
  NodeError,
  Scope.Scope | Vault.Vault | NodeConfig | IdentityStore.IdentityStore | CredentialStore.CredentialStore
> =>
  Effect.gen(function*() {
    const config = yield* NodeConfig
    const store = yield* IdentityStore.IdentityStore
    const fromConfig = yield* Effect.provide(IdentityProvider.IdentityProvider, ConfigFile.layerIdentity)
    const limiter = yield* RateLimit.make
    const identity = yield* tlsIdentity
    const credentials = yield* Effect.mapError(Tls.load(identity), fail("Identity"))
    const startedAt = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
    const drainTimeout = Duration.millis(config.static.drain_timeout_ms)
    const transports: Array<Transport> = []
    let outbound: Outbound.Service | undefined

    const info: Effect.Effect<NodeInfo> = Effect.map(
      Effect.clockWith((clock) => clock.currentTimeMillis),
      (now) => ({
        id: credentials.fingerprint,
        fingerprint: credentials.fingerprint,
        version: VERSION,
        uptime_ms: now - startedAt,
        transports,
        peers: outbound?.peers() ?? []
      })
    )
    const registry = yield* OperationRegistry.make([...builtins(info), ...(options.operations ?? [])]).pipe(
      Effect.mapError(fail("Registry"))
    )
    const graph = yield* Composite.make(registry.source, { listPeers: config.static.list_peers })
    // Discovery describes what is served: the node's own operations and the peers' exported ones.
    const served = Discovery.withDiscovery(graph.source)
    const authenticator = withOwner(credentials.fingerprint, firstOf(store, fromConfig))
    const maxAuthAttempts = Effect.map(config.dynamic, (d) => d.rate_limits.max_auth_attempts)
    const serve: CallProtocol.ServeOptions = {
      source: served,
      extendEnv: graph.extendEnv,
      authenticator,
      maxAuthAttempts,
      limits: Effect.map(config.dynamic, ({ rate_limits: r }) => ({
        maxInFlightPerConnection: r.max_calls_per_connection,
        maxInFlightPerCaller: r.max_calls_per_caller,
        maxCallTimeoutMs: r.max_call_timeout_ms,
        anonymousSubscriptionTimeoutMs: r.anonymous_subscription_timeout_ms
      })),
      // An address in its auth-failure cooldown is refused quietly (the limiter logged the block once).
      admit: (connection) =>
        Effect.zipRight(
          Effect.mapError(limiter.checkAddress(connection.remoteAddress.host), (blocked) => ({
            message: blocked.message,
            logged: true
          })),
          limiter.acquireConnection(connection.remoteAddress.host)
        ),
      onAuthFailure: (connection) => limiter.recordAuthFailure(connection.remoteAddress.host)
    }

    const listen = options.listen ?? config.static.listen
    const endpoint = yield* Quic.makeEndpoint({
      host: listen.host,
      port: listen.port,
      identity,
      handlers: { [CallProtocol.ALPN]: CallProtocol.handler(serve) },
      drainTimeout
    }).pipe(Effect.mapError(fail("Listen")))
    transports.push({ kind: "quic", address: `quic://${hostForUrl(endpoint.address.host)}:${endpoint.address.port}` })

    if (options.webSocket !== undefined) {
      const secure = options.webSocket.tls ?? true
      const gatewayOptions = options.webSocket.gateway
      const gateway = gatewayOptions === undefined || gatewayOptions === false ? undefined : yield* Gateway.make({
        ...(gatewayOptions === true ? {} : gatewayOptions),
        source: served,
        extendEnv: graph.extendEnv,
        authenticator,
        admit: (remote) => limiter.checkAddress(remote.host),
        onAuthFailure: (remote) => limiter.recordAuthFailure(remote.host),
        ...(serve.limits === undefined ? {} : { limits: serve.limits }),
        title: `alknet node ${credentials.fingerprint}`,
        version: VERSION
      })
      const listener = yield* WebSocket.listen({
        host: options.webSocket.host,
        port: options.webSocket.port,
        ...(secure ? { identity } : {}),
        onConnection: CallProtocol.webSocketHandler(serve),
        ...(gateway === undefined ? {} : { onRequest: gateway.handler }),
        admitUpgrade: (remote) =>
          Effect.mapError(limiter.checkAddress(remote.host), (blocked) => ({
            status: 429,
            message: blocked.message,
            retryAfterMs: blocked.retryAfterMs
          })),
        drainTimeout
      }).pipe(Effect.mapError(fail("Listen")))
      transports.push({ kind: secure ? "wss" : "ws", address: listener.url })
    }

    outbound = yield* Outbound.make(graph, {
      identity,
      // A peer we connected to is who our providers say its key is, as if it had connected to us.
      authenticator,
      maxAuthAttempts,
      changes: config.changes.pipe(Stream.map((d) => d.outbound), Stream.changesWith((a, b) => JSON.stringify(a) === JSON.stringify(b))),
      ...(options.connect === undefined ? {} : { extra: options.connect })
    })

    return Node.of({
      id: credentials.fingerprint,
      fingerprint: credentials.fingerprint,
      transports,
      source: served,
      graph,
      info
    })
  })

// ---------------------------------------------------------------------------------------------------------------
// Layers

export interface HomeOptions extends Options {
  /** The node's home directory (see `NodeHome`). */
  readonly home: string
  /** The mnemonic, when the home keeps none (`--no-store-mnemonic`). */
  readonly mnemonic?: Redacted.Redacted<string>
  /** The BIP39 passphrase, if the mnemonic has one. */
  readonly passphrase?: Redacted.Redacted<string>
}

/** Unlock the vault: from the given mnemonic, else from the home's mnemonic file. */
const unlock = (options: HomeOptions) =>
  Effect.gen(function*() {
    const vault = yield* Vault.Vault
    if (options.mnemonic !== undefined) return yield* vault.unlock(options.mnemonic, options.passphrase)
    yield* Vault.unlockFromFile(NodeHome.mnemonicPath(options.home), options.passphrase)
  }).pipe(Effect.mapError(fail("Vault")), Effect.provide(NodeFileSystem.layer))

/** The stores of a home: SQLite in the config's `data_dir`. */
const homeStores = Layer.unwrapEffect(
  Effect.map(NodeConfig, (config) =>
    SqliteStore.layer({ filename: NodeHome.databasePath(config.static.data_dir) }).pipe(
      Layer.mapError(fail("Store"))
    ))
)

type Provided =
  | Node
  | Vault.Vault
  | NodeConfig
  | IdentityStore.IdentityStore
  | IdentityProvider.IdentityProvider
  | CredentialStore.CredentialStore

/**
 * The production node in `options.home`. Provides `Node` and the services a program embedding it may use: the
 * `Vault`, the stores, the live `NodeConfig` and the `ConfigFile` (to reload it, e.g. on SIGHUP).
 */
export const layer = (options: HomeOptions): Layer.Layer<Provided | ConfigFile.ConfigFile, NodeError> => {
  const home = Layer.effectDiscard(Effect.mapError(NodeHome.requireHome(options.home), fail("Home")))
  const config = ConfigFile.layerConfig(NodeHome.configPath(options.home)).pipe(
    Layer.mapError(fail("Config")),
    Layer.provide(home)
  )
  const vault = Layer.effectDiscard(unlock(options)).pipe(Layer.provideMerge(Vault.layer), Layer.provide(home))
  const base = Layer.mergeAll(vault, Layer.provideMerge(homeStores, config))
  return Layer.provideMerge(Layer.scoped(Node, make(options)), base)
}

export interface MemoryOptions extends Options {
  /** The mnemonic to unlock (default: a fresh one, so the identity changes every run). */
  readonly mnemonic?: Redacted.Redacted<string>
  /** Config in the file's JSON shape (default `{}`; `listen` defaults to 127.0.0.1:0 here). */
  readonly config?: typeof Config.Encoded
}

/**
 * A node with in-memory stores and a fixed config: for tests, examples, and embedding. Listens on 127.0.0.1, on any
 * free port unless `listen` says otherwise.
 */
export const layerMemory = (
  options: MemoryOptions = {}
): Layer.Layer<Provided, NodeError> => {
  const vault = Layer.effectDiscard(
    Effect.flatMap(Vault.Vault, (vault) =>
      options.mnemonic === undefined ? Effect.asVoid(vault.unlockNew(24)) : vault.unlock(options.mnemonic)).pipe(
        Effect.mapError(fail("Vault"))
      )
  ).pipe(Layer.provideMerge(Vault.layer))
  const config = NodeConfigModule.layerStatic({ listen: "127.0.0.1:0", ...options.config })
  const base = Layer.mergeAll(vault, config, IdentityStore.layerMemory(), CredentialStore.layerMemory)
  return Layer.provideMerge(Layer.scoped(Node, make(options)), base)
}
