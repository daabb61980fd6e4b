/**
 * One end-to-end suite, run over every store × transport combination (memory and SQLite stores; in-memory, QUIC and
 * WebSocket transports), as @effect/rpc runs its e2e suite per protocol. Each node is composed from the same public
 * layers; only the store layer, the listener layer and the dialer layer differ.
 */
import { expect, layer } from "@effect/vitest"
import { Chunk, Effect, Fiber, Layer, Schedule, Schema, Stream } from "effect"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import * as CallError from "../../src/errors/CallError.js"
import * as CallClient from "../../src/layers/Client.js"
import * as Dialers from "../../src/layers/Dialers.js"
import * as Memory from "../../src/layers/Memory.js"
import * as Node from "../../src/layers/Node.js"
import * as SqliteStore from "../../src/layers/sqlite/SqliteStore.js"
import * as Contract from "../../src/services/Contract.js"
import * as CredentialStore from "../../src/services/CredentialStore.js"
import * as IdentityStore from "../../src/services/IdentityStore.js"
import * as NodeConfig from "../../src/services/NodeConfig.js"
import * as RateLimit from "../../src/services/RateLimit.js"
import * as Tls from "../../src/services/Tls.js"

class NotFriendly extends Schema.TaggedError<NotFriendly>()(
  "NotFriendly",
  { name: Schema.String },
  Contract.declare({ code: "NOT_FRIENDLY" })
) {}

const Greeter = Contract.group({
  greet: Contract.query("demo/greet", {
    input: Schema.Struct({ name: Schema.String }),
    output: Schema.String,
    errors: [NotFriendly],
    access: { requiredScopes: ["demo"] }
  }),
  ticks: Contract.subscription("demo/ticks", { input: Schema.Struct({ n: Schema.Number }), output: Schema.Number }),
  hang: Contract.query("demo/hang", { input: Schema.Struct({}), output: Schema.Null })
})

const GreeterLive = Greeter.toLayer({
  greet: ({ name }) => name === "Mallory" ? Effect.fail(new NotFriendly({ name })) : Effect.succeed(`hello, ${name}`),
  ticks: ({ n }) => Stream.range(1, n),
  hang: () => Effect.never
})

const clientSeed = new Uint8Array(32).fill(5)
const clientFingerprint = Tls.ed25519Fingerprint(Tls.ed25519PublicKey(clientSeed))

const tempDir = Effect.acquireRelease(
  Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "alknet-e2e-"))),
  (dir) => Effect.promise(() => fs.rm(dir, { recursive: true, force: true }))
)

const stores = {
  memory: Layer.merge(IdentityStore.layerMemory(), CredentialStore.layerMemory),
  sqlite: Layer.unwrapScoped(Effect.map(tempDir, (dir) => SqliteStore.layer({ filename: path.join(dir, "alknet.db") })))
}

type Listener = Layer.Layer<never, Node.NodeError, Node.Node | NodeConfig.NodeConfig | RateLimit.RateLimiter | Memory.Network>
type Dialer = Layer.Layer<CallClient.Dialer, never, Memory.Network>

const transports: Record<"memory" | "quic" | "webSocket", { readonly listener: Listener; readonly dialer: Dialer }> = {
  memory: { listener: Memory.layerListener(), dialer: Memory.layerDialer },
  quic: { listener: Node.layerQuic(), dialer: Dialers.layerQuic },
  webSocket: { listener: Node.layerWebSocket({ host: "127.0.0.1", port: 0 }), dialer: Dialers.layerWebSocket }
}

const nodeLayer = (store: keyof typeof stores, transport: keyof typeof transports) =>
  transports[transport].listener.pipe(
    Layer.provideMerge(Node.layer()),
    Layer.provideMerge(Layer.mergeAll(
      Contract.layerRegistry(Greeter).pipe(Layer.provide(GreeterLive)),
      RateLimit.layer,
      Node.layerIdentity,
      transports[transport].dialer
    )),
    Layer.provideMerge(stores[store]),
    Layer.provideMerge(NodeConfig.layerStatic({ listen: "127.0.0.1:0" })),
    Layer.provideMerge(Node.layerVault()),
    Layer.provideMerge(Memory.layerNetwork),
    Layer.orDie
  )

const connect = (credentials: CallClient.Credentials = {}) =>
  Effect.flatMap(Node.Node, (node) =>
    CallClient.connect(node.transports[0]!.address, { expectedFingerprint: node.fingerprint, ...credentials }))

for (const store of Object.keys(stores) as Array<keyof typeof stores>) {
  for (const transport of Object.keys(transports) as Array<keyof typeof transports>) {
    layer(nodeLayer(store, transport), { excludeTestServices: true, timeout: 30_000 })(
      `node e2e: ${store} store, ${transport} transport`,
      (it) => {
        it.scoped("it listens where the layer says; anonymous callers get the open operations only", () =>
          Effect.gen(function*() {
            const node = yield* Node.Node
            expect(node.transports.map((t) => t.kind)).toEqual([
              transport === "memory" ? "memory" : transport === "quic" ? "quic" : "wss"
            ])
            const connection = yield* connect()
            expect(yield* connection.call("node/ping", {})).toMatchObject({ pong: true })
            const listed = (yield* connection.call("services/list", {})) as { operations: Array<{ name: string }> }
            // Discovery lists what the caller could call: the scoped demo/greet is not among it.
            const names = listed.operations.map((o) => o.name)
            expect(names).toEqual(expect.arrayContaining(["node/ping", "demo/ticks", "demo/hang"]))
            expect(names).not.toContain("demo/greet")
            const client = Contract.client(Greeter, connection)
            const denied = yield* Effect.flip(client.greet({ name: "Ada" }))
            expect(denied).toBeInstanceOf(CallError.CallError)
            expect((denied as CallError.CallError).code).toBe("FORBIDDEN")
          }))

        it.scoped("a peer written to the store while the node runs: by key fingerprint, then by bearer token", () =>
          Effect.gen(function*() {
            const identities = yield* IdentityStore.IdentityStore
            const peer_id = `peer-${store}-${transport}`
            yield* identities.putPeer({ peer_id, fingerprints: [clientFingerprint], scopes: ["demo"], resources: {}, enabled: true })
            const byKey = Contract.client(Greeter, yield* connect({ identity: Tls.RawKey(clientSeed) }))
            expect(yield* byKey.greet({ name: "Ada" })).toBe("hello, Ada")
            const refused = yield* Effect.flip(byKey.greet({ name: "Mallory" }))
            expect(refused).toBeInstanceOf(NotFriendly)
            const token = yield* IdentityStore.issuePeerToken(peer_id)
            const byToken = Contract.client(Greeter, yield* connect({ token }))
            expect(yield* byToken.greet({ name: "token" })).toBe("hello, token")
            yield* identities.removePeer(peer_id)
            const gone = yield* Effect.flip(byToken.greet({ name: "token" }))
            expect((gone as CallError.CallError).code).toBe("FORBIDDEN")
          }))

        it.scoped("a subscription delivers its items in order, then completes", () =>
          Effect.gen(function*() {
            const client = Contract.client(Greeter, yield* connect())
            expect(Chunk.toArray(yield* Stream.runCollect(client.ticks({ n: 50 })))).toEqual(
              Array.from({ length: 50 }, (_, i) => i + 1)
            )
          }))

        it.scoped("a dropped connection fails its pending call with 'connection closed'; the node serves the next", () =>
          Effect.gen(function*() {
            const connection = yield* connect()
            const pending = yield* Effect.fork(Contract.client(Greeter, connection).hang({}))
            // Wait until the node is serving the call, then drop the connection.
            yield* Effect.repeat(connection.stats, { until: (s) => s.pending === 1, schedule: Schedule.spaced("5 millis") })
            yield* connection.close
            const failed = yield* Effect.flip(Fiber.join(pending))
            expect([(failed as CallError.CallError).code, (failed as CallError.CallError).message]).toEqual([
              "INTERNAL",
              "connection closed"
            ])
            const next = yield* connect()
            expect(yield* next.call("node/ping", {})).toMatchObject({ pong: true })
          }))
      }
    )
  }
}
