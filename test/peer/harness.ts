/**
 * A head and two workers on 127.0.0.1, over a real transport (QUIC or WebSocket): each is an operation registry, a
 * peer graph over it, and (the head) a listener serving the graph. Workers dial the head with reconnecting links;
 * the head imports each worker's operations when it connects. Probes let tests see what the workers observed.
 */
import { Deferred, Effect, Exit, Option, Schedule, Schema, Scope, Stream } from "effect"
import type * as Connection from "../../src/call/Connection.js"
import * as CallError from "../../src/errors/CallError.js"
import * as Quic from "../../src/layers/quic/Quic.js"
import * as WebSocket from "../../src/layers/ws/WebSocket.js"
import * as Dialers from "../../src/layers/Dialers.js"
import * as Composite from "../../src/peer/Composite.js"
import * as Peer from "../../src/peer/Peer.js"
import * as CallProtocol from "../../src/services/CallProtocol.js"
import * as Operation from "../../src/services/Operation.js"
import * as OperationRegistry from "../../src/services/OperationRegistry.js"
import * as PeerCompositeEnv from "../../src/services/PeerCompositeEnv.js"
import * as Tls from "../../src/services/Tls.js"
import { ADMIN_SCOPE } from "../../src/schema/Identity.js"
import type { Identity } from "../../src/schema/Identity.js"

export interface Net {
  readonly name: string
  readonly listen: (
    identity: Tls.TlsIdentity,
    options: CallProtocol.ServeOptions,
    port?: number
  ) => Effect.Effect<{ readonly url: string; readonly port: number; readonly fingerprint: string }, unknown, Scope.Scope>
}

export const quic: Net = {
  name: "QUIC",
  listen: (identity, options, port = 0) =>
    Effect.map(
      Quic.makeEndpoint({
        host: "127.0.0.1",
        port,
        identity,
        handlers: { [CallProtocol.ALPN]: CallProtocol.handler(options) },
        drainTimeout: 200
      }),
      (endpoint) => ({
        url: `quic://127.0.0.1:${endpoint.address.port}`,
        port: endpoint.address.port,
        fingerprint: endpoint.fingerprint
      })
    )
}

export const webSocket: Net = {
  name: "WebSocket",
  listen: (identity, options, port = 0) =>
    Effect.map(
      WebSocket.listen({
        host: "127.0.0.1",
        port,
        identity,
        onConnection: CallProtocol.webSocketHandler(options),
        drainTimeout: 200
      }),
      (listener) => ({ url: listener.url, port: listener.address.port, fingerprint: Option.getOrThrow(listener.fingerprint) })
    )
}

const seed = (byte: number) => new Uint8Array(32).fill(byte)
export const seeds = { head: seed(11), "worker-a": seed(12), "worker-b": seed(13), client: seed(14) } as const
export type Name = keyof typeof seeds
const fingerprintOf = (s: Uint8Array) => Tls.ed25519Fingerprint(Tls.ed25519PublicKey(s))

/**
 * Everyone knows everyone by key; the client may use the head's `head/*` operations, with scope `admin`, and see the
 * head's graph (`services/list-peers` in full) with `alknet:admin`.
 */
const identities: ReadonlyMap<string, Identity> = new Map(
  (Object.keys(seeds) as Array<Name>).map((name) => [
    fingerprintOf(seeds[name]),
    { id: name, scopes: name === "client" ? ["admin", "ops", ADMIN_SCOPE] : ["ops"], resources: {} }
  ])
)
export const authenticator: CallProtocol.Authenticator = {
  resolveFingerprint: (fp) => Effect.succeed(Option.fromNullable(identities.get(fp))),
  resolveToken: () => Effect.succeed(Option.none())
}

/** What a worker's handlers saw. */
export interface Probe {
  started: Deferred.Deferred<void>
  interrupted: Deferred.Deferred<void>
  readonly seen: Array<{ readonly op: string; readonly remainingMs: number | null; readonly forwardedFor: string | null }>
}
const newProbe = (): Probe => ({
  started: Deferred.unsafeMake(undefined as never),
  interrupted: Deferred.unsafeMake(undefined as never),
  seen: []
})
export const resetProbe = (probe: Probe) => {
  probe.started = Deferred.unsafeMake(undefined as never)
  probe.interrupted = Deferred.unsafeMake(undefined as never)
  probe.seen.length = 0
}

const NotReady = Operation.error({ code: "NOT_READY", description: "the container is starting" })
const Exec = Schema.Struct({ cmd: Schema.String })
const ExecResult = Schema.Struct({
  worker: Schema.String,
  cmd: Schema.String,
  remaining_ms: Schema.NullOr(Schema.Number),
  forwarded_for: Schema.NullOr(Schema.String),
  caller: Schema.NullOr(Schema.String)
})

const remainingOf = (ctx: Operation.OperationContext) =>
  Effect.map(Effect.clockWith((c) => c.currentTimeMillis), (now) => Option.getOrNull(Option.map(ctx.deadline, (d) => d - now)))

/** A worker's operations: `container/exec` and friends. */
export const workerOperations = (name: string, probe: Probe) => [
  Operation.query({
    name: "container/exec",
    input: Exec,
    output: ExecResult,
    handler: ({ cmd }, ctx) =>
      Effect.map(remainingOf(ctx), (remaining) => {
        const forwardedFor = Option.getOrNull(Option.map(ctx.forwardedFor, (i) => i.id))
        probe.seen.push({ op: "container/exec", remainingMs: remaining, forwardedFor })
        return {
          worker: name,
          cmd,
          remaining_ms: remaining,
          forwarded_for: forwardedFor,
          caller: Option.getOrNull(Option.map(ctx.identity, (i) => i.id))
        }
      })
  }),
  Operation.query({
    name: "container/hang",
    input: Schema.Unknown,
    output: Schema.Null,
    handler: () =>
      Deferred.succeed(probe.started, undefined).pipe(
        Effect.zipRight(Effect.never),
        Effect.onInterrupt(() => Deferred.succeed(probe.interrupted, undefined))
      )
  }),
  Operation.query({
    name: "container/admin",
    input: Schema.Unknown,
    output: Schema.String,
    access: { requiredScopes: ["admin"] },
    handler: () => Effect.succeed("granted")
  }),
  Operation.query({
    name: "container/fail",
    input: Schema.Unknown,
    output: Schema.Null,
    errors: [NotReady],
    handler: () => Effect.fail(CallError.domain("NOT_READY", `${name} is starting`, { eta_ms: 250 }))
  }),
  Operation.subscription({
    name: "container/logs",
    input: Schema.Struct({ n: Schema.Int }),
    output: Schema.String,
    handler: ({ n }) => Stream.map(Stream.range(1, n), (i) => `${name} line ${i}`)
  }),
  Operation.query({
    name: "worker/ask-head",
    input: Schema.Unknown,
    output: Schema.Unknown,
    env: PeerCompositeEnv.scopedPeerEnv([], [{ peer: "head", name: "head/hello" }]),
    handler: (_, ctx) => PeerCompositeEnv.invokePeer(ctx, PeerCompositeEnv.Specific("head"), "head/hello", { from: name })
  })
]

const PeerInput = Schema.Struct({ peer: Schema.optional(Schema.String), cmd: Schema.String })
/** The head composes under this authority; it holds `admin`, which must not reach a worker through forwarded_for. */
const headAuthority = Operation.authority("head-ops", { scopes: ["ops", "admin"] })

const execEnv = PeerCompositeEnv.scopedPeerEnv(["container/exec", "container/hang", "container/admin", "container/fail"])

/** The head's operations: they reach the workers through the peer graph. */
export const headOperations = [
  Operation.query({
    name: "head/hello",
    input: Schema.Struct({ from: Schema.String }),
    output: Schema.String,
    handler: ({ from }, ctx) =>
      Effect.succeed(`hello ${from}, from the head (you are ${Option.getOrElse(Option.map(ctx.identity, (i) => i.id), () => "?")})`)
  }),
  Operation.query({
    name: "head/session",
    input: Schema.Struct({ n: Schema.Int }),
    output: Schema.Unknown,
    authority: headAuthority,
    handler: ({ n }, ctx) => sessionDemo(ctx, n)
  }),
  ...(["exec", "hang", "admin", "fail"] as const).map((op) =>
    Operation.query({
      name: `head/${op}`,
      input: PeerInput,
      output: Schema.Unknown,
      authority: headAuthority,
      env: execEnv,
      errors: [NotReady],
      handler: ({ cmd, peer }, ctx) =>
        peer === undefined
          ? ctx.env.invoke(`container/${op}`, { cmd })
          : PeerCompositeEnv.invokePeer(
            ctx,
            peer === "*" ? PeerCompositeEnv.Any : PeerCompositeEnv.Specific(peer),
            `container/${op}`,
            { cmd }
          )
    })
  ),
]

/** What `head/session` leaves behind: the env of its closed session, to show its operations are gone. */
export const sessionLeft: { env: PeerCompositeEnv.PeerEnv | undefined } = { env: undefined }

/**
 * `head/session`: open a session whose operation `session/count` runs under the authority `session-<n>` (and calls
 * `session/step` of the same session through the session env); answer what it saw and what the plain env sees.
 */
const sessionDemo = (ctx: Operation.OperationContext, n: number) =>
  Effect.scoped(Effect.gen(function*() {
    const step = Operation.query({
      name: "session/step",
      input: Schema.Unknown,
      output: Schema.Unknown,
      access: { requiredScopes: ["session"] },
      handler: (_, inner) => Effect.succeed({ step_identity: Option.getOrNull(Option.map(inner.identity, (i) => i.id)) })
    })
    const count = Operation.query({
      name: "session/count",
      input: Schema.Unknown,
      output: Schema.Unknown,
      handler: (_, inner) =>
        Effect.succeed({
          identity: Option.getOrNull(Option.map(inner.identity, (i) => i.id)),
          authority: Option.getOrNull(Option.map(inner.handlerIdentity, (a) => a.label)),
          internal: inner.internal,
          n
        })
    })
    const env = yield* PeerCompositeEnv.openSession(ctx, {
      authority: Operation.authority(`session-${n}`, { scopes: ["session"] }),
      operations: [count, step.with({ provenance: "Session" })]
    })
    sessionLeft.env = env
    const counted = yield* env.invoke("session/count", {})
    const stepped = yield* env.invoke("session/step", {}).pipe(Effect.catchAll((e) => Effect.succeed(e.code)))
    const plain = yield* Effect.either(ctx.env.invoke("session/count", {}))
    return { counted, stepped, plain: plain._tag === "Left" ? plain.left.code : "reached" }
  }))

export interface Head {
  readonly url: string
  readonly port: number
  readonly fingerprint: string
  readonly graph: PeerCompositeEnv.Service
  /** Connections the head accepted, for leak checks. */
  readonly accepted: Array<Connection.Connection>
}

export const startHead = (net: Net, port?: number): Effect.Effect<Head, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const registry = yield* OperationRegistry.make(headOperations)
    const graph = yield* Composite.make(registry.source, { listPeers: true })
    const accepted: Array<Connection.Connection> = []
    const options = Peer.serveOptions(graph, { authenticator })
    const listening = yield* net.listen(Tls.RawKey(seeds.head), {
      ...options,
      onConnection: (connection, info) =>
        Effect.zipRight(Effect.sync(() => accepted.push(connection)), options.onConnection!(connection, info))
    }, port)
    return { ...listening, graph, accepted }
  })

export interface Worker {
  readonly name: Name
  readonly graph: PeerCompositeEnv.Service
  readonly link: Peer.Link
  readonly probe: Probe
  /** Stop the worker (its scope): connections close, as if the process died. */
  readonly kill: Effect.Effect<void>
}

export const startWorker = (
  name: Name,
  head: { readonly url: string; readonly fingerprint: string },
  probe: Probe = newProbe(),
  schedule?: Schedule.Schedule<unknown, unknown>
): Effect.Effect<Worker, unknown> =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const registry = yield* Scope.extend(OperationRegistry.make(workerOperations(name, probe)), scope)
    const graph = yield* Scope.extend(Composite.make(registry.source), scope)
    const link = yield* Scope.extend(
      Peer.connect(graph, {
        peerId: "head",
        address: head.url,
        credentials: { identity: Tls.RawKey(seeds[name]), expectedFingerprint: head.fingerprint },
        authenticator,
        connectTimeout: "2 seconds",
        ...(schedule === undefined ? {} : { schedule })
      }),
      scope
    )
    yield* link.connection
    return { name, graph, link, probe, kill: Scope.close(scope, Exit.void) }
  }).pipe(Effect.provide(Dialers.layer))

/** Wait until every count of a connection is back to zero (or show what is left). */
export const idle = (connection: Connection.Connection) =>
  Effect.gen(function*() {
    for (let i = 0; i < 100; i++) {
      const stats = yield* connection.stats
      if (Object.values(stats).every((n) => n === 0)) return stats
      yield* Effect.sleep("10 millis")
    }
    return yield* connection.stats
  })
