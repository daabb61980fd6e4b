import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Redacted, Schema } from "effect"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import * as Node from "../../src/layers/Node.js"
import * as NodeHome from "../../src/layers/NodeHome.js"
import { ADMIN_SCOPE } from "../../src/schema/Identity.js"
import * as CallClient from "../../src/layers/Client.js"
import * as IdentityStore from "../../src/services/IdentityStore.js"
import * as Operation from "../../src/services/Operation.js"
import * as Tls from "../../src/services/Tls.js"
import * as Vault from "../../src/services/Vault.js"

const MNEMONIC = Redacted.make(
  "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
)
const clientSeed = new Uint8Array(32).fill(3)
const clientFingerprint = Tls.ed25519Fingerprint(Tls.ed25519PublicKey(clientSeed))

const hello = Operation.query({
  name: "demo/hello",
  input: Schema.Struct({ name: Schema.String }),
  output: Schema.String,
  access: { requiredScopes: ["demo"] },
  handler: ({ name }) => Effect.succeed(`hello, ${name}`)
})

const tempHome = Effect.acquireRelease(
  Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "alknet-node-"))),
  (dir) => Effect.promise(() => fs.rm(dir, { recursive: true, force: true }))
)

describe("Node", () => {
  it.live("a memory node serves its built-ins and the user's operations, over QUIC and WebSocket", () =>
    Effect.gen(function*() {
      const node = yield* Node.Node
      expect(node.transports.map((t) => t.kind)).toEqual(["quic", "wss"])
      // The node's identity is the vault's node key.
      const key = yield* Vault.nodeIdentity
      expect(node.fingerprint).toBe(Tls.ed25519Fingerprint(key.publicKey))
      for (const transport of node.transports) {
        const client = yield* CallClient.connect(transport.address, {
          identity: Tls.RawKey(clientSeed),
          expectedFingerprint: node.fingerprint
        })
        // Anonymous: who the node is, nothing about where it listens or whom it talks to.
        expect(yield* client.call("node/info", {})).toEqual({
          id: node.fingerprint,
          fingerprint: node.fingerprint,
          version: Node.VERSION
        })
        expect(yield* client.call("node/whoami", {})).toEqual({ identity: null })
        const denied = yield* Effect.flip(client.call("demo/hello", { name: "x" }))
        expect(denied.code).toBe("FORBIDDEN")
        // A peer added while the connection is up applies to its next call.
        const store = yield* IdentityStore.IdentityStore
        yield* store.putPeer({
          peer_id: "alice",
          fingerprints: [clientFingerprint],
          scopes: ["demo"],
          resources: {},
          enabled: true
        })
        expect(yield* client.call("demo/hello", { name: "alice" })).toBe("hello, alice")
        expect(yield* client.call("node/whoami", {})).toEqual({
          identity: { id: "alice", scopes: ["demo"], resources: {} }
        })
        // A peer granted alknet:admin sees the node's internals too.
        yield* store.putPeer({
          peer_id: "alice",
          fingerprints: [clientFingerprint],
          scopes: [ADMIN_SCOPE],
          resources: {},
          enabled: true
        })
        const info = (yield* client.call("node/info", {})) as Node.NodeInfo
        expect(info.transports).toEqual(node.transports)
        expect(info.peers).toEqual([])
        yield* store.removePeer("alice")
      }
    }).pipe(
      Effect.scoped,
      Effect.provide(Node.layerMemory({
        mnemonic: MNEMONIC,
        operations: [hello],
        webSocket: { host: "127.0.0.1", port: 0 }
      }))
    ))

  it.live("the node's own key (the CLI with --home) is an admin: node/info in full, whoami says alknet:admin", () =>
    Effect.gen(function*() {
      const node = yield* Node.Node
      const key = yield* Vault.nodeIdentity
      const own = yield* CallClient.connect(node.transports[0]!.address, {
        identity: Tls.RawKey(key.privateKey),
        expectedFingerprint: node.fingerprint
      })
      expect(yield* own.call("node/whoami", {})).toEqual({
        identity: { id: node.fingerprint, scopes: [ADMIN_SCOPE], resources: {} }
      })
      const info = (yield* own.call("node/info", {})) as Node.NodeInfo
      expect(info).toMatchObject({ id: node.fingerprint, transports: node.transports, peers: [] })
      expect(info.uptime_ms).toBeGreaterThanOrEqual(0)
      // What the stores grant the same key is kept, the admin scope added.
      const store = yield* IdentityStore.IdentityStore
      yield* store.putPeer({ peer_id: "me", fingerprints: [node.fingerprint], scopes: ["demo"], resources: {}, enabled: true })
      expect(yield* own.call("node/whoami", {})).toEqual({
        identity: { id: "me", scopes: ["demo", ADMIN_SCOPE], resources: {} }
      })
      expect(yield* own.call("demo/hello", { name: "me" })).toBe("hello, me")
    }).pipe(
      Effect.scoped,
      Effect.provide(Node.layerMemory({ mnemonic: MNEMONIC, operations: [hello] }))
    ))

  it.live("a home node: init, then run from the home with SQLite stores and the mnemonic file", () =>
    Effect.gen(function*() {
      const home = path.join(yield* tempHome, "home")
      const created = yield* NodeHome.init({ home, mnemonic: MNEMONIC }).pipe(Effect.provide(Vault.layer))
      expect(created.generated).toBeUndefined()
      expect((yield* Effect.promise(() => fs.stat(NodeHome.mnemonicPath(home)))).mode & 0o777).toBe(0o600)
      const again = yield* Effect.flip(NodeHome.init({ home, mnemonic: MNEMONIC }).pipe(Effect.provide(Vault.layer)))
      expect(again._tag === "HomeError" && again.reason).toBe("Exists")

      yield* Effect.gen(function*() {
        const node = yield* Node.Node
        expect(node.fingerprint).toBe(created.fingerprint)
        const client = yield* CallClient.connect(node.transports[0]!.address, { expectedFingerprint: node.fingerprint })
        expect((yield* client.call("node/ping", {})) as { pong: boolean }).toMatchObject({ pong: true })
      }).pipe(Effect.scoped, Effect.provide(Node.layerHome({ home, listen: { host: "127.0.0.1", port: 0 } })))

      const missing = yield* Effect.flip(
        Layer.build(Node.layerHome({ home: path.join(home, "nope") })).pipe(Effect.scoped)
      )
      expect(missing.reason).toBe("Home")
      expect(missing.message).toContain("alknet init")
    }).pipe(Effect.scoped))

  it.live("rate limits from the live config: connections per IP, failed token attempts per connection", () =>
    Effect.gen(function*() {
      const node = yield* Node.Node
      const ws = node.transports.find((t) => t.kind === "wss")!
      const connect = CallClient.connect(ws.address, { expectedFingerprint: node.fingerprint })
      const first = yield* connect
      expect(yield* first.call("node/ping", {})).toMatchObject({ pong: true })
      // A second connection from 127.0.0.1 is over max_connections_per_ip = 1: refused, closed at once.
      const second = yield* connect
      yield* second.closed.pipe(Effect.timeout("5 seconds"))
      const refused = yield* Effect.flip(second.call("node/ping", {}))
      expect(refused.message).toBe("connection closed")
      // The first keeps working; after max_auth_attempts = 2 bad tokens it is closed.
      const bad = { authToken: Redacted.make("alk_not-a-real-token") }
      expect(yield* first.call("node/whoami", {}, bad)).toEqual({ identity: null })
      yield* Effect.flip(first.call("node/whoami", {}, bad))
      yield* first.closed.pipe(Effect.timeout("5 seconds"))
    }).pipe(
      Effect.scoped,
      Effect.provide(Node.layerMemory({
        mnemonic: MNEMONIC,
        webSocket: { host: "127.0.0.1", port: 0 },
        config: { rate_limits: { max_connections_per_ip: 1, max_auth_attempts: 2 } }
      }))
    ))
})
