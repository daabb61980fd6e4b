/**
 * The composition root: a node is a service graph (SPEC §2), assembled from Layers.
 *
 * `Node.layer(options?)` provides `Node` and reads every concern from context:
 *
 * | required | what it is | layers |
 * |---|---|---|
 * | `Vault` (unlocked) | the node key (TLS identity), decrypts outbound tokens | `Vault.layer` + an unlock |
 * | `NodeConfig` | static + live config | `NodeConfig.layerStatic`, `ConfigFile.layerConfig` |
 * | `IdentityProvider` | who is calling | `Node.layerIdentity` (store, then config), `IdentityStore.layerMemory`, your own |
 * | `CredentialStore` | outbound peers' tokens | `CredentialStore.layerMemory`, `SqliteStore.layer`, `PgStore.layer` |
 * | `OperationRegistry` | the user's operations | `Node.layerOperations(ops)`, `OperationRegistry.layer` |
 * | `RateLimiter` | per-address limits | `RateLimit.layer` |
 * | `CallClient.Dialer` | how outbound peers are dialed | `Dialers.layer` (QUIC + WebSocket), `layerQuic`, `layerWebSocket` |
 *
 * Listeners are layers on top of a node: `Node.layerQuic(...)`, `Node.layerWebSocket(...)` (the call protocol at
 * `/alknet/call`, and the HTTP gateway on the same port with `gateway`), `Node.layerHttp(...)` (the HTTP gateway on a
 * port of its own: the config's `http_listen`); each requires `Node`. A node without one only dials out.
 *
 * Ready-made bundles are compositions of those public layers:
 * - `Node.layerHome({ home })`: the production node. The vault is unlocked from the home's mnemonic, the identity
 *   key is derived at `m/74'/0'/0'/0'`, peers / API keys / credentials live in SQLite in the home, and the home's
 *   config file is watched for dynamic changes. It listens on QUIC (`alknet/call`) and, optionally, WebSocket.
 * - `Node.layerMemory(...)`: the same node with in-memory stores and a static config, for tests and for embedding
 *   in a larger Effect program.
 * Replace one piece by building your own composition (see `layerWith`).
 *
 * Who is calling is resolved by the `IdentityProvider` (in the bundles: the store first, then the config's `peers` /
 * `api_keys`; both change while the node runs); the node's own key is always an admin. Rate limits come from the
 * live config: `max_connections_per_ip` gates each connection,
 * `max_auth_attempts` closes a connection after that many bad tokens, and an address with
 * `max_auth_failures_per_ip` failed authentications (bad upgrade bearer tokens, bad `auth_token`s) within
 * `auth_failure_window_ms` is refused for `auth_block_ms`: QUIC connections are closed at admission, WebSocket
 * upgrades answered HTTP 429 — whoever connects from that address, good clients included. A WebSocket upgrade whose
 * bearer token resolves to nobody is answered HTTP 401 (and counted); one without a token is anonymous.
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
 *
 * The config's `imports` (REST APIs by their OpenAPI documents, MCP servers' tools; `peer/Imports.ts`) are peers of the
 * graph too, named by their namespaces: attached at start and kept in step with the live config; `node/info` reports
 * each one's state to an admin.
 *
 * With an `ssh` object in the config the node also serves SSH (`alknet/ssh`, see `ssh/SshServer.ts`) on its QUIC
 * endpoint (`layerQuic` registers `node.protocols`): host key from the vault, client keys resolved like callers'.
 */
import { Context, Data, Duration, Effect, Layer, Option, Schema, Stream } from "effect"
import type { Redacted, Scope } from "effect"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as Discovery from "../call/Discovery.js"
import * as NodeMetrics from "../observability/NodeMetrics.js"
import type { OperationSource } from "../call/Dispatcher.js"
import * as Composite from "../peer/Composite.js"
import * as Imports from "../peer/Imports.js"
import * as Outbound from "../peer/Outbound.js"
import type * as CallClient from "../services/CallClient.js"
import * as CallProtocol from "../services/CallProtocol.js"
import * as CredentialStore from "../services/CredentialStore.js"
import type { Address, ProtocolHandler } from "../services/Endpoint.js"
import * as IdentityProvider from "../services/IdentityProvider.js"
import * as IdentityStore from "../services/IdentityStore.js"
import * as StoreStatus from "../services/StoreStatus.js"
import { NodeConfig } from "../services/NodeConfig.js"
import * as NodeConfigModule from "../services/NodeConfig.js"
import * as Operation from "../services/Operation.js"
import type { HandlerRegistration } from "../services/Operation.js"
import * as PeerCompositeEnv from "../services/PeerCompositeEnv.js"
import * as OperationRegistry from "../services/OperationRegistry.js"
import * as RateLimit from "../services/RateLimit.js"
import * as Tls from "../services/Tls.js"
import * as Vault from "../services/Vault.js"
import type { Config, OutboundPeer } from "../schema/Config.js"
import { ADMIN_SCOPE, Identity, isAdmin } from "../schema/Identity.js"
import * as Client from "./Client.js"
import * as Dialers from "./Dialers.js"
import * as ConfigFile from "./ConfigFile.js"
import * as Gateway from "./http/Gateway.js"
import * as HttpServer from "./http/Server.js"
import * as NodeHome from "./NodeHome.js"
import * as Quic from "./quic/Lazy.js"
import * as Ssh from "./ssh/Lazy.js"
import * as Stores from "./Stores.js"
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
  readonly kind: "quic" | "ws" | "wss" | "http" | "https" | "memory"
  /** `quic://HOST:PORT`, `ws://…`, `wss://…`; `http(s)://…` for the gateway's own listener */
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
  transports: Schema.Array(
    Schema.Struct({ kind: Schema.Literal("quic", "ws", "wss", "http", "https", "memory"), address: Schema.String })
  ),
  /** The outbound peers and how they are doing. */
  peers: Schema.Array(Outbound.PeerInfo),
  /** The config's imports (OpenAPI documents, MCP servers) and how they are doing. */
  imports: Schema.Array(Imports.ImportInfo),
  /** The store and whether it is reachable (absent for in-memory stores). */
  store: Schema.optionalWith(StoreStatus.Status, { exact: true })
})
export type NodeInfo = typeof NodeInfo.Type

/** A running node. */
export class Node extends Context.Tag("alknet/Node")<Node, {
  /** The node's id (its fingerprint unless the config names it). */
  readonly id: string
  /** The node's TLS fingerprint, as peers see it. */
  readonly fingerprint: string
  /** Where it listens, QUIC first (filled in by the listener layers; empty for a node that only dials out). */
  readonly transports: ReadonlyArray<Transport>
  /** The operations it serves (built-ins, discovery, the user's, and peers' exported ones). */
  readonly source: OperationSource
  /** Its peer graph. */
  readonly graph: PeerCompositeEnv.Service
  readonly info: Effect.Effect<NodeInfo>
  /** How the node serves the call protocol on an accepted connection: what a listener hands `CallProtocol`. */
  readonly serve: CallProtocol.ServeOptions
  /** The node's TLS identity, which its listeners serve with. */
  readonly tls: Tls.TlsIdentity
  /** A listener announces where it listens, for the life of its scope (`transports`, `node/info`). */
  readonly addTransport: (transport: Transport) => Effect.Effect<void, never, Scope.Scope>
  /** Protocols the QUIC endpoint serves beside `alknet/call`, by ALPN (`alknet/ssh` when the config has `ssh`). */
  readonly protocols: Readonly<Record<string, ProtocolHandler>>
  /** The config's imports, attached to `graph` under their namespaces and kept in step with the live config. */
  readonly imports: Imports.Service
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

/** The HTTP gateway's limits (defaults: 1 MiB bodies, 30 s per call, 64 calls per batch) and its MCP endpoint. */
export interface GatewayOptions {
  readonly maxBodyBytes?: number
  readonly timeout?: Duration.DurationInput
  readonly maxBatch?: number
  /** MCP at `/mcp` (default on: one tool per operation; `{ mode: "generic" }` for the four generic tools; false: off). */
  readonly mcp?: boolean | { readonly mode?: "operations" | "generic" }
}

/** The HTTP gateway on a listener of its own (`layerHttp`; the config's `http_listen` / `http_tls`). */
export interface HttpOptions {
  /** Where to listen (default: the config's `http_listen`; neither: no listener). */
  readonly listen?: Address
  /** Serve `https://` with the node's TLS identity (default: the config's `http_tls`, true); false: plain `http://`. */
  readonly tls?: boolean
  /** The gateway's limits and MCP endpoint. */
  readonly gateway?: GatewayOptions
}

/** What `Node.layer` takes beside its services. */
export interface CoreOptions {
  /** Outbound peers besides the config's `outbound` (e.g. `alknet node --connect`), for the node's life. */
  readonly connect?: ReadonlyArray<OutboundPeer>
}

/** What the bundles (`layerMemory`, `layerHome`, `layerWith`) take. */
export interface Options<E = never, R = never> extends CoreOptions {
  /**
   * The user's operations, served beside the built-ins: registrations, or a layer of the `OperationRegistry` (e.g.
   * `Contract.layerRegistry(group)` over the groups' handler layers).
   */
  readonly operations?: ReadonlyArray<HandlerRegistration> | Layer.Layer<OperationRegistry.OperationRegistry, E, R>
  /** Listen on QUIC here instead of the config's `listen`. */
  readonly listen?: Address
  /** Also serve the call protocol over WebSocket. */
  readonly webSocket?: WebSocketOptions
  /** Serve the HTTP gateway on a listener of its own here (default: the config's `http_listen`, if any). */
  readonly http?: HttpOptions
}

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

/** What `Node.make` / `Node.layer` read from context. */
export type Services =
  | Vault.Vault
  | NodeConfig
  | IdentityProvider.IdentityProvider
  | CredentialStore.CredentialStore
  | OperationRegistry.OperationRegistry
  | RateLimit.RateLimiter
  | CallClient.Dialer

/** Two parts of the config are the same (a reload that did not touch them changes nothing). */
const sameJson = <A>(a: A, b: A): boolean => JSON.stringify(a) === JSON.stringify(b)

const rank = (kind: Transport["kind"]) => (kind === "quic" ? 0 : 1)

/** The built-ins in front of the user's registry; a user operation may not take a built-in's name. */
const withBuiltins = (
  builtin: ReadonlyArray<HandlerRegistration>,
  registry: OperationRegistry.OperationRegistry["Type"]
): Effect.Effect<OperationSource, NodeError> => {
  const own = OperationRegistry.sourceOf(builtin)
  for (const { spec } of registry.registrations) {
    if (own.lookup(spec.name) !== undefined) {
      return Effect.fail(new NodeError({ reason: "Registry", message: `operation ${spec.name} is registered twice` }))
    }
  }
  const list = [...builtin, ...registry.registrations]
  return Effect.succeed({
    lookup: (name) => own.lookup(name) ?? registry.source.lookup(name),
    list: () => list
  })
}

/**
 * Start a node from the services in context (`Services`). It serves nothing until a listener layer (`layerQuic`,
 * `layerWebSocket`) serves it; it dials its outbound peers through the `Dialer`. When the scope closes its links close
 * and its graph is dropped (listeners built on it have drained by then).
 */
export const make = (
  options: CoreOptions = {}
): Effect.Effect<Node["Type"], NodeError, Scope.Scope | Services> =>
  Effect.gen(function*() {
    const config = yield* NodeConfig
    const provider = yield* IdentityProvider.IdentityProvider
    const registry = yield* OperationRegistry.OperationRegistry
    const limiter = yield* RateLimit.RateLimiter
    const identity = yield* tlsIdentity
    const credentials = yield* Effect.mapError(Tls.load(identity), fail("Identity"))
    const startedAt = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
    const transports: Array<Transport> = []
    let outbound: Outbound.Service | undefined
    let imports: Imports.Service | undefined

    const storeStatus = yield* Effect.serviceOption(StoreStatus.StoreStatus)
    const info: Effect.Effect<NodeInfo> = Effect.zipWith(
      Effect.all([
        Effect.clockWith((clock) => clock.currentTimeMillis),
        Effect.suspend(() => imports?.status ?? Effect.succeed([]))
      ]),
      Option.match(storeStatus, { onNone: () => Effect.succeed(undefined), onSome: (s) => s.current }),
      ([now, imported], store) => ({
        id: credentials.fingerprint,
        fingerprint: credentials.fingerprint,
        version: VERSION,
        uptime_ms: now - startedAt,
        transports: [...transports],
        peers: outbound?.peers() ?? [],
        imports: imported,
        ...(store === undefined ? {} : { store })
      })
    )
    const base = yield* withBuiltins(builtins(info), registry)
    const graph = yield* Composite.make(base, { listPeers: config.static.list_peers })
    // Discovery describes what is served: the node's own operations and the peers' exported ones.
    const served = Discovery.withDiscovery(graph.source)
    const authenticator = withOwner(credentials.fingerprint, provider)
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

    // SSH (`alknet/ssh`) when the config asks for it: host key from the vault, keys resolved like callers'.
    const protocols = config.static.ssh === undefined
      ? {}
      : yield* Effect.mapError(
        Ssh.handlers(config.static.ssh, authenticator, limiter),
        (e) => fail(e._tag === "EndpointError" ? "Listen" : "Vault")(e)
      )

    outbound = yield* Outbound.make(graph, {
      identity,
      // A peer we connected to is who our providers say its key is, as if it had connected to us.
      authenticator,
      maxAuthAttempts,
      changes: config.changes.pipe(Stream.map((d) => d.outbound), Stream.changesWith(sameJson)),
      ...(options.connect === undefined ? {} : { extra: options.connect })
    })
    // Every accepted reload (an edit, SIGHUP) retries the imports that failed; the attached ones stay unless changed.
    imports = yield* Imports.make(graph, {
      changes: config.changes.pipe(Stream.map((d) => d.imports)),
      local: Discovery.withDiscovery(base)
    })

    return Node.of({
      id: credentials.fingerprint,
      fingerprint: credentials.fingerprint,
      transports,
      source: served,
      graph,
      info,
      serve,
      tls: identity,
      protocols,
      imports,
      addTransport: (transport) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            const at = transports.findIndex((t) => rank(t.kind) > rank(transport.kind))
            transports.splice(at === -1 ? transports.length : at, 0, transport)
          }),
          () =>
            Effect.sync(() => {
              const at = transports.indexOf(transport)
              if (at !== -1) transports.splice(at, 1)
            })
        )
    })
  })

// ---------------------------------------------------------------------------------------------------------------
// Layers: the node, its pieces, its listeners

/**
 * The node over the services in context (`Services`); add listeners with `layerQuic` / `layerWebSocket`. Provides
 * `Node` and the node's peer graph as `PeerCompositeEnv` (the node builds it over its registry and built-ins).
 */
export const layer = (
  options: CoreOptions = {}
): Layer.Layer<Node | PeerCompositeEnv.PeerCompositeEnv, NodeError, Services> =>
  Layer.scopedContext(Effect.map(
    make(options),
    (node) => Context.make(Node, node).pipe(Context.add(PeerCompositeEnv.PeerCompositeEnv, node.graph))
  ))

/** The user's operations as the node's `OperationRegistry` (duplicate or reserved names fail the layer). */
export const layerOperations = (
  operations: ReadonlyArray<HandlerRegistration> = []
): Layer.Layer<OperationRegistry.OperationRegistry, NodeError> =>
  OperationRegistry.layer(operations).pipe(Layer.mapError(fail("Registry")))

/**
 * Who is calling, as the bundles resolve it: the `IdentityStore` first (peers and API keys written while the node
 * runs), then the config's `peers` / `api_keys` (reloaded with the config).
 */
export const layerIdentity: Layer.Layer<
  IdentityProvider.IdentityProvider,
  never,
  IdentityStore.IdentityStore | NodeConfig
> = Layer.effect(
  IdentityProvider.IdentityProvider,
  Effect.gen(function*() {
    const store = yield* IdentityStore.IdentityStore
    const fromConfig = yield* Effect.provide(IdentityProvider.IdentityProvider, ConfigFile.layerIdentity)
    return IdentityProvider.IdentityProvider.of(firstOf(store, fromConfig))
  })
)

/**
 * Serve the node on QUIC (ALPN `alknet/call`) at `listen` (default: the config's `listen`) for the layer's life.
 * `clientCertificates` (default `required`): see `Quic.EndpointOptions` — `ignored` serves QUIC clients that have no
 * certificate (identity by bearer token only; no caller is then identified by its fingerprint on this listener).
 */
export const layerQuic = (
  options: { readonly listen?: Address; readonly clientCertificates?: "required" | "ignored" } = {}
): Layer.Layer<never, NodeError, Node | NodeConfig> =>
  Layer.scopedDiscard(Effect.gen(function*() {
    const node = yield* Node
    const config = yield* NodeConfig
    const listen = options.listen ?? config.static.listen
    const endpoint = yield* Quic.makeEndpoint({
      host: listen.host,
      port: listen.port,
      identity: node.tls,
      handlers: { [CallProtocol.ALPN]: CallProtocol.handler(node.serve), ...node.protocols },
      drainTimeout: Duration.millis(config.static.drain_timeout_ms),
      ...(options.clientCertificates === undefined ? {} : { clientCertificates: options.clientCertificates })
    }).pipe(Effect.mapError(fail("Listen")))
    yield* node.addTransport({
      kind: "quic",
      address: `quic://${HttpServer.hostForUrl(endpoint.address.host)}:${endpoint.address.port}`
    })
  }))

/**
 * The node's HTTP gateway (its operations, its callers' identities, the limiter's auth-failure cooldown, and the
 * wire's per-caller in-flight count: `CallProtocol.callerAdmission`), for the life of the scope.
 */
const gatewayOf = (
  node: Node["Type"],
  config: NodeConfig["Type"],
  limiter: RateLimit.RateLimiter["Type"],
  options: true | GatewayOptions
) => {
  const authenticator = node.serve.authenticator
  return Gateway.make({
    mcp: true,
    ...(options === true ? {} : options),
    source: node.source,
    extendEnv: node.graph.extendEnv,
    ...(authenticator === undefined ? {} : { authenticator }),
    admit: (remote) => limiter.checkAddress(remote.host),
    onAuthFailure: (remote) => limiter.recordAuthFailure(remote.host),
    ...(node.serve.limits === undefined ? {} : { limits: node.serve.limits }),
    callerAdmission: CallProtocol.callerAdmission(node.serve),
    metrics: config.static.metrics,
    title: `alknet node ${node.fingerprint}`,
    version: VERSION
  })
}

/**
 * Serve the HTTP gateway on a listener of its own (`https://` with the node's TLS identity unless `tls: false`), at
 * `options.listen`, else the config's `http_listen`; without either this layer does nothing. The listener serves
 * plain requests only (an upgrade is 404: the call-protocol WebSocket is `layerWebSocket`'s).
 */
export const layerHttp = (
  options: HttpOptions = {}
): Layer.Layer<never, NodeError, Node | NodeConfig | RateLimit.RateLimiter> =>
  Layer.scopedDiscard(Effect.gen(function*() {
    const config = yield* NodeConfig
    const listen = options.listen ?? config.static.http_listen
    if (listen === undefined) return
    const node = yield* Node
    const secure = options.tls ?? config.static.http_tls
    const gateway = yield* gatewayOf(node, config, yield* RateLimit.RateLimiter, options.gateway ?? {})
    const listener = yield* HttpServer.listen({
      host: listen.host,
      port: listen.port,
      ...(secure ? { identity: node.tls } : {}),
      onRequest: gateway.handler,
      drainTimeout: Duration.millis(config.static.drain_timeout_ms)
    }).pipe(Effect.mapError(fail("Listen")))
    yield* node.addTransport({ kind: secure ? "https" : "http", address: listener.url })
  }))

/**
 * Serve the node's call protocol over WebSocket (`wss://` with the node's TLS identity unless `tls: false`), and the
 * HTTP gateway on the same port when `gateway` says so. Upgrades from an address in its auth-failure cooldown are
 * answered HTTP 429; an upgrade whose bearer token resolves to nobody, HTTP 401 (a failed authentication). The gateway
 * shares the wire's per-caller in-flight count (`CallProtocol.callerAdmission`).
 */
export const layerWebSocket = (
  options: WebSocketOptions
): Layer.Layer<never, NodeError, Node | NodeConfig | RateLimit.RateLimiter> =>
  Layer.scopedDiscard(Effect.gen(function*() {
    const node = yield* Node
    const config = yield* NodeConfig
    const limiter = yield* RateLimit.RateLimiter
    const secure = options.tls ?? true
    const authenticator = node.serve.authenticator
    const gateway = options.gateway === undefined || options.gateway === false
      ? undefined
      : yield* gatewayOf(node, config, limiter, options.gateway)
    const listener = yield* WebSocket.listen({
      host: options.host,
      port: options.port,
      ...(secure ? { identity: node.tls } : {}),
      onConnection: CallProtocol.webSocketHandler(node.serve),
      ...(gateway === undefined ? {} : { onRequest: gateway.handler }),
      admitUpgrade: (remote, token) =>
        Effect.gen(function*() {
          yield* Effect.mapError(limiter.checkAddress(remote.host), (blocked): WebSocket.UpgradeRefused => ({
            status: 429,
            message: blocked.message,
            retryAfterMs: blocked.retryAfterMs
          }))
          // No token: anonymous, the ACL decides. A token that resolves to nobody is a failed authentication.
          if (authenticator === undefined || Option.isNone(token)) return
          if (Option.isSome(yield* authenticator.resolveToken(token.value))) return
          NodeMetrics.countAuthFailure("ws")
          yield* limiter.recordAuthFailure(remote.host)
          return yield* Effect.fail<WebSocket.UpgradeRefused>({ status: 401, message: "unknown bearer token" })
        }),
      drainTimeout: Duration.millis(config.static.drain_timeout_ms)
    }).pipe(Effect.mapError(fail("Listen")))
    yield* node.addTransport({ kind: secure ? "wss" : "ws", address: listener.url })
  }))

/** What a bundle provides beside `Node`: the services a program embedding the node may use. */
export type Provided =
  | Node
  | PeerCompositeEnv.PeerCompositeEnv
  | Vault.Vault
  | NodeConfig
  | IdentityStore.IdentityStore
  | IdentityProvider.IdentityProvider
  | CredentialStore.CredentialStore
  | OperationRegistry.OperationRegistry
  | RateLimit.RateLimiter
  | CallClient.Dialer
  | CallClient.CallClient

const registryOf = <E, R>(
  operations: Options<E, R>["operations"]
): Layer.Layer<OperationRegistry.OperationRegistry, NodeError | E, R> =>
  operations !== undefined && Layer.isLayer(operations)
    ? operations as Layer.Layer<OperationRegistry.OperationRegistry, E, R>
    : layerOperations(operations as ReadonlyArray<HandlerRegistration> | undefined)

/**
 * A node with its listeners (`options.listen`: QUIC; `options.webSocket`), its operations, the rate limiter,
 * `layerIdentity` and both dialers, over the stores, config and vault in context. The bundles are this over a base;
 * build your own base to replace a store, the config or the vault.
 */
export const layerWith = <E = never, R = never>(
  options: Options<E, R> = {}
): Layer.Layer<
  | Node
  | PeerCompositeEnv.PeerCompositeEnv
  | IdentityProvider.IdentityProvider
  | OperationRegistry.OperationRegistry
  | RateLimit.RateLimiter
  | CallClient.Dialer
  | CallClient.CallClient,
  NodeError | E,
  Vault.Vault | NodeConfig | IdentityStore.IdentityStore | CredentialStore.CredentialStore | R
> => {
  const quic = Layer.merge(layerQuic(options.listen === undefined ? {} : { listen: options.listen }), layerHttp(options.http))
  const listeners = options.webSocket === undefined ? quic : Layer.merge(quic, layerWebSocket(options.webSocket))
  const node = Layer.provideMerge(listeners, layer(options.connect === undefined ? {} : { connect: options.connect }))
  const parts = Layer.mergeAll(
    registryOf(options.operations),
    RateLimit.layer,
    layerIdentity,
    Layer.provideMerge(Client.layer, Dialers.layer)
  )
  return Layer.provideMerge(node, parts)
}

export interface HomeOptions<E = never, R = never> extends Options<E, R> {
  /** The node's home directory (see `NodeHome`). */
  readonly home: string
  /** The mnemonic, when the home keeps none (`--no-store-mnemonic`). */
  readonly mnemonic?: Redacted.Redacted<string>
  /** The BIP39 passphrase, if the mnemonic has one. */
  readonly passphrase?: Redacted.Redacted<string>
}

/** Unlock the vault: from the given mnemonic, else from the home's mnemonic file. */
const unlock = <E, R>(options: HomeOptions<E, R>) =>
  Effect.gen(function*() {
    const vault = yield* Vault.Vault
    if (options.mnemonic !== undefined) return yield* vault.unlock(options.mnemonic, options.passphrase)
    yield* Vault.unlockFromFile(NodeHome.mnemonicPath(options.home), options.passphrase)
  }).pipe(Effect.mapError(fail("Vault")), Effect.provide(NodeFileSystem.layer))

/** The stores of a home: SQLite in the config's `data_dir`, or the PostgreSQL database its `store` names. */
export const layerHomeStores: Layer.Layer<
  | IdentityStore.IdentityStore
  | IdentityProvider.IdentityProvider
  | CredentialStore.CredentialStore
  | StoreStatus.StoreStatus,
  NodeError,
  NodeConfig
> = Layer.unwrapEffect(
  Effect.map(NodeConfig, (config) => Stores.layer(config.static).pipe(Layer.mapError(fail("Store"))))
)

/** The config of a home: its config file, watched (requires the home to exist). */
export const layerHomeConfig = (home: string): Layer.Layer<NodeConfig | ConfigFile.ConfigFile, NodeError> =>
  ConfigFile.layerConfig(NodeHome.configPath(home)).pipe(
    Layer.mapError(fail("Config")),
    Layer.provide(Layer.effectDiscard(Effect.mapError(NodeHome.requireHome(home), fail("Home"))))
  )

/** The vault of a home, unlocked from its mnemonic file (or `options.mnemonic`). */
export const layerHomeVault = <E, R>(options: HomeOptions<E, R>): Layer.Layer<Vault.Vault, NodeError> =>
  Layer.effectDiscard(unlock(options)).pipe(
    Layer.provideMerge(Vault.layer),
    Layer.provide(Layer.effectDiscard(Effect.mapError(NodeHome.requireHome(options.home), fail("Home"))))
  )

/**
 * The production node in `options.home`: `layerWith(options)` over the home's vault, config file and SQLite stores.
 * Provides `Node` and the services a program embedding it may use: the `Vault`, the stores, the live `NodeConfig`
 * and the `ConfigFile` (to reload it, e.g. on SIGHUP).
 */
export const layerHome = <E = never, R = never>(
  options: HomeOptions<E, R>
): Layer.Layer<Provided | ConfigFile.ConfigFile | StoreStatus.StoreStatus, NodeError | E, R> => {
  const config = layerHomeConfig(options.home)
  const base = Layer.mergeAll(layerHomeVault(options), Layer.provideMerge(layerHomeStores, config))
  return Layer.provideMerge(layerWith(options), base)
}

export interface MemoryOptions<E = never, R = never> extends Options<E, R> {
  /** The mnemonic to unlock (default: a fresh one, so the identity changes every run). */
  readonly mnemonic?: Redacted.Redacted<string>
  /** Config in the file's JSON shape (default `{}`; `listen` defaults to 127.0.0.1:0 here). */
  readonly config?: typeof Config.Encoded
}

/** A vault unlocked with `mnemonic`, or with a fresh 24-word one. */
export const layerVault = (mnemonic?: Redacted.Redacted<string>): Layer.Layer<Vault.Vault, NodeError> =>
  Layer.effectDiscard(
    Effect.flatMap(Vault.Vault, (vault) =>
      mnemonic === undefined ? Effect.asVoid(vault.unlockNew(24)) : vault.unlock(mnemonic)).pipe(
        Effect.mapError(fail("Vault"))
      )
  ).pipe(Layer.provideMerge(Vault.layer))

/**
 * A node with in-memory stores and a fixed config: for tests, examples, and embedding. Listens on 127.0.0.1, on any
 * free port unless `listen` says otherwise.
 */
export const layerMemory = <E = never, R = never>(
  options: MemoryOptions<E, R> = {}
): Layer.Layer<Provided, NodeError | E, R> => {
  const config = NodeConfigModule.layerStatic({ listen: "127.0.0.1:0", ...options.config })
  const base = Layer.mergeAll(layerVault(options.mnemonic), config, IdentityStore.layerMemory(), CredentialStore.layerMemory)
  return Layer.provideMerge(layerWith(options), base)
}
