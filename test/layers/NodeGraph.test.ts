/**
 * The node is a service graph: `Node.layer` reads every concern from context, so a user replaces one piece by
 * providing another layer. One test per replaceable piece, and a node embedded in a larger Effect program.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Option, Redacted, Schema } from "effect"
import * as FetchHttpClient from "@effect/platform/FetchHttpClient"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as fs from "node:fs/promises"
import * as Http from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import * as CallClient from "../../src/layers/Client.js"
import * as ConfigFile from "../../src/layers/ConfigFile.js"
import * as Dialers from "../../src/layers/Dialers.js"
import * as Node from "../../src/layers/Node.js"
import { Identity } from "../../src/schema/Identity.js"
import * as CredentialStore from "../../src/services/CredentialStore.js"
import * as IdentityProvider from "../../src/services/IdentityProvider.js"
import * as IdentityStore from "../../src/services/IdentityStore.js"
import * as NodeConfig from "../../src/services/NodeConfig.js"
import * as Operation from "../../src/services/Operation.js"
import * as OperationRegistry from "../../src/services/OperationRegistry.js"
import * as RateLimit from "../../src/services/RateLimit.js"
import * as Tls from "../../src/services/Tls.js"

const MNEMONIC = Redacted.make(
  "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
)
const seed = (n: number) => new Uint8Array(32).fill(n)
const fingerprintOf = (s: Uint8Array) => Tls.ed25519Fingerprint(Tls.ed25519PublicKey(s))

const hello = Operation.query({
  name: "demo/hello",
  input: Schema.Struct({ name: Schema.String }),
  output: Schema.String,
  access: { requiredScopes: ["demo"] },
  handler: ({ name }) => Effect.succeed(`hello, ${name}`)
})
const echo = Operation.query({
  name: "demo/echo",
  input: Schema.Unknown,
  output: Schema.Unknown,
  handler: (input) => Effect.succeed(input)
})

const WhoAmI = Schema.Struct({ identity: Schema.NullOr(Identity) })

const tempDir = Effect.acquireRelease(
  Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "alknet-graph-"))),
  (dir) => Effect.promise(() => fs.rm(dir, { recursive: true, force: true }))
)

/** Everything a node needs except the pieces a test replaces. */
const common = (operations: ReadonlyArray<Operation.HandlerRegistration> = []) =>
  Layer.mergeAll(Node.layerOperations(operations), RateLimit.layer, Dialers.layer, CredentialStore.layerMemory)

describe("Node from layers", () => {
  it.live("a user-supplied IdentityProvider decides who is calling (no identity store at all)", () =>
    Effect.gen(function*() {
      const node = yield* Node.Node
      const client = yield* CallClient.connect(node.transports[0]!.address, {
        identity: Tls.RawKey(seed(7)),
        expectedFingerprint: node.fingerprint
      })
      expect(yield* client.call("node/whoami", {})).toEqual({
        identity: { id: "from-my-directory", scopes: ["demo"], resources: {} }
      })
      expect(yield* client.call("demo/hello", { name: "Ada" })).toBe("hello, Ada")
      // Another key is unknown to that provider: anonymous, so the scoped operation is refused.
      const stranger = yield* CallClient.connect(node.transports[0]!.address, {
        identity: Tls.RawKey(seed(8)),
        expectedFingerprint: node.fingerprint
      })
      expect(yield* stranger.call("node/whoami", {})).toEqual({ identity: null })
      expect((yield* Effect.flip(stranger.call("demo/hello", { name: "x" }))).code).toBe("FORBIDDEN")
    }).pipe(
      Effect.scoped,
      Effect.provide(
        Node.layerQuic().pipe(
          Layer.provideMerge(Node.layer()),
          Layer.provideMerge(common([hello])),
          Layer.provideMerge(Layer.succeed(IdentityProvider.IdentityProvider, {
            // The user's own directory: one known key, no tokens.
            resolveFingerprint: (fp) =>
              Effect.succeed(
                fp === fingerprintOf(seed(7))
                  ? Option.some({ id: "from-my-directory", scopes: ["demo"], resources: {} })
                  : Option.none()
              ),
            resolveToken: () => Effect.succeed(Option.none())
          })),
          Layer.provideMerge(NodeConfig.layerStatic({ listen: "127.0.0.1:0" })),
          Layer.provideMerge(Node.layerVault(MNEMONIC))
        )
      )
    ))

  it.live("a memory store under a file config: peers from the file and from the store both resolve", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const file = path.join(dir, "config.json")
      yield* Effect.promise(() =>
        fs.writeFile(
          file,
          JSON.stringify({
            listen: "127.0.0.1:0",
            peers: [{ peer_id: "from-file", fingerprints: [fingerprintOf(seed(7))], scopes: ["demo"] }]
          })
        )
      )
      const memoryUnderFile = Layer.mergeAll(IdentityStore.layerMemory(), CredentialStore.layerMemory).pipe(
        Layer.provideMerge(ConfigFile.layerConfig(file)),
        Layer.provideMerge(Node.layerVault(MNEMONIC))
      )
      yield* Effect.gen(function*() {
        const node = yield* Node.Node
        const config = yield* ConfigFile.ConfigFile
        expect(config.path).toBe(file)
        const connect = (n: number) =>
          CallClient.connect(node.transports[0]!.address, {
            identity: Tls.RawKey(seed(n)),
            expectedFingerprint: node.fingerprint
          })
        const fromFile = yield* connect(7)
        expect(Schema.decodeUnknownSync(WhoAmI)(yield* fromFile.call("node/whoami", {})).identity?.id).toBe("from-file")
        // Written to the memory store while the node runs: seen on the next call.
        const store = yield* IdentityStore.IdentityStore
        yield* store.putPeer({
          peer_id: "from-store",
          fingerprints: [fingerprintOf(seed(9))],
          scopes: ["demo"],
          resources: {},
          enabled: true
        })
        const fromStore = yield* connect(9)
        expect(yield* fromStore.call("demo/hello", { name: "store" })).toBe("hello, store")
        expect(Schema.decodeUnknownSync(WhoAmI)(yield* fromStore.call("node/whoami", {})).identity?.id).toBe(
          "from-store"
        )
      }).pipe(Effect.provide(Layer.provideMerge(Node.layerWith({ operations: [hello] }), memoryUnderFile)))
    }).pipe(Effect.scoped))

  it.live("a WebSocket-only node: no QUIC listener, a ws:// client; a WebSocket-only dialer refuses quic:// clearly", () =>
    Effect.gen(function*() {
      const node = yield* Node.Node
      expect(node.transports.map((t) => t.kind)).toEqual(["ws"])
      const info = (yield* node.info).transports
      expect(info).toEqual(node.transports)
      const client = yield* CallClient.connect(node.transports[0]!.address)
      expect(yield* client.call("demo/echo", { n: 1 })).toEqual({ n: 1 })
      // The dialer in context is the WebSocket one: a QUIC address is a Config error naming what it dials.
      const refused = yield* Effect.flip(CallClient.connect("quic://127.0.0.1:9"))
      expect(refused.reason).toBe("Config")
      expect(refused.message).toContain("no quic transport (it dials ws, wss)")
    }).pipe(
      Effect.scoped,
      Effect.provide(
        Node.layerWebSocket({ host: "127.0.0.1", port: 0, tls: false }).pipe(
          Layer.provideMerge(Node.layer()),
          Layer.provideMerge(
            Layer.mergeAll(
              Node.layerOperations([echo]),
              RateLimit.layer,
              Dialers.layerWebSocket,
              CredentialStore.layerMemory,
              Node.layerIdentity
            )
          ),
          Layer.provideMerge(IdentityStore.layerMemory()),
          Layer.provideMerge(NodeConfig.layerStatic({})),
          Layer.provideMerge(Node.layerVault())
        )
      )
    ))

  it.live("a node with no listener dials out: its outbound peer's operations are in its graph", () =>
    Effect.gen(function*() {
      const server = yield* Layer.build(Node.layerMemory({ operations: [echo] }))
      const remote = Context.get(server, Node.Node)
      const built = yield* Layer.build(
        Node.layer().pipe(
            Layer.provideMerge(common()),
            Layer.provideMerge(Node.layerIdentity),
            Layer.provideMerge(IdentityStore.layerMemory()),
            Layer.provideMerge(NodeConfig.layerStatic({
              outbound: [{
                peer_id: "server",
                address: remote.transports[0]!.address,
                fingerprint: remote.fingerprint,
                export_as: "external"
              }]
            })),
            Layer.provideMerge(Node.layerVault())
          )
      )
      const node = Context.get(built, Node.Node)
      expect(node.transports).toEqual([])
      yield* node.graph.awaitPeer("server")
      expect(yield* node.graph.call("demo/echo", "over the link")).toBe("over the link")
      const peers = (yield* node.info).peers
      expect(peers.map((p) => [p.peer_id, p.state])).toEqual([["server", "connected"]])
    }).pipe(Effect.scoped))

  it.live("embedded in a larger program: an HTTP server and a node in one runtime, handlers using the program's service", () => {
    // The program's own service; the node's operation reads it when its registry layer is built.
    class Greeting extends Context.Tag("test/Greeting")<Greeting, { readonly word: string }>() {}
    const operations = Layer.effect(
      OperationRegistry.OperationRegistry,
      Effect.gen(function*() {
        const { word } = yield* Greeting
        return yield* OperationRegistry.make([
          Operation.query({
            name: "demo/greet",
            input: Schema.Struct({ name: Schema.String }),
            output: Schema.String,
            handler: ({ name }) => Effect.succeed(`${word}, ${name}`)
          })
        ])
      }).pipe(Effect.orDie)
    )
    // The HTTP side calls the node in process, through its registry, and answers with the node's id.
    const http = HttpRouter.empty.pipe(
      HttpRouter.get(
        "/greet",
        Effect.gen(function*() {
          const node = yield* Node.Node
          const registry = yield* OperationRegistry.OperationRegistry
          const greeting = yield* Effect.orDie(registry.invoke("demo/greet", { name: "http" }))
          return yield* HttpServerResponse.json({ node: node.id, greeting })
        })
      ),
      HttpServer.serve(),
      Layer.provideMerge(NodeHttpServer.layer(() => Http.createServer(), { host: "127.0.0.1", port: 0 }))
    )
    const nodeLayer = Node.layerQuic().pipe(
      Layer.provideMerge(Node.layer()),
      Layer.provideMerge(Layer.mergeAll(operations, RateLimit.layer, Dialers.layer, CredentialStore.layerMemory, Node.layerIdentity)),
      Layer.provideMerge(IdentityStore.layerMemory()),
      Layer.provideMerge(NodeConfig.layerStatic({ listen: "127.0.0.1:0" })),
      Layer.provideMerge(Node.layerVault()),
      Layer.provideMerge(Layer.succeed(Greeting, { word: "howdy" }))
    )
    return Effect.gen(function*() {
      const node = yield* Node.Node
      const { address } = yield* HttpServer.HttpServer
      const port = address._tag === "TcpAddress" ? address.port : 0
      const response = yield* HttpClient.get(`http://127.0.0.1:${port}/greet`)
      expect(yield* response.json).toEqual({ node: node.id, greeting: "howdy, http" })
      // The same operation over the wire.
      const client = yield* CallClient.connect(node.transports[0]!.address, { expectedFingerprint: node.fingerprint })
      expect(yield* client.call("demo/greet", { name: "quic" })).toBe("howdy, quic")
    }).pipe(
      Effect.scoped,
      Effect.provide(Layer.mergeAll(Layer.provideMerge(http, nodeLayer), FetchHttpClient.layer)),
      Effect.scoped
    )
  })
})
