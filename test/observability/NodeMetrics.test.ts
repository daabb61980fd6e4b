/**
 * The node's metrics outside the engine, over real listeners: `GET /metrics` on the gateway (auth by default, public
 * when configured), open connections by transport (back to where they were once closed), auth failures by transport,
 * outbound peer links by state, and live store reloads. Effect's registry is global to the process: every assertion
 * is on a delta.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, MetricLabel, Option, Redacted, Schema, Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Client from "../../src/layers/Client.js"
import * as ConfigFile from "../../src/layers/ConfigFile.js"
import * as Memory from "../../src/layers/Memory.js"
import * as Node from "../../src/layers/Node.js"
import * as Quic from "../../src/layers/quic/Lazy.js"
import * as Keys from "../../src/layers/ssh/Keys.js"
import * as SshClient from "../../src/layers/ssh/SshClient.js"
import * as SshServer from "../../src/layers/ssh/SshServer.js"
import * as PgStore from "../../src/layers/pg/PgStore.js"
import * as SqliteStore from "../../src/layers/sqlite/SqliteStore.js"
import * as Metrics from "../../src/observability/Metrics.js"
import { OutboundPeer } from "../../src/schema/Config.js"
import { PeerEntry } from "../../src/schema/PeerEntry.js"
import * as CallClient from "../../src/services/CallClient.js"
import * as IdentityStore from "../../src/services/IdentityStore.js"
import * as Tls from "../../src/services/Tls.js"
import { ed25519, eventually, tempDir } from "../shared/identity.js"
import { parse, valueOf } from "../shared/prometheus.js"
import { freshDatabase, query, serverUrl, SKIP_MESSAGE } from "../layers/pg/harness.js"

const labels = (values: Record<string, string>) => Object.entries(values).map(([k, v]) => MetricLabel.make(k, v))
const connections = (transport: string) => Metrics.connections.unsafeValue(labels({ transport })).value
const links = (state: string) => Metrics.peerLinks.unsafeValue(labels({ state })).value
const authFailures = (transport: string) => Metrics.authFailures.unsafeValue(labels({ transport })).count
const reloads = (store: string, result: string) => Metrics.storeReloads.unsafeValue(labels({ store, result })).count

const get = (url: string, token?: string) =>
  Effect.promise(async () => {
    const response = await fetch(url, token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } })
    return { status: response.status, headers: response.headers, text: await response.text() }
  })

const gatewayNode = (config: Node.MemoryOptions["config"] = {}) =>
  Node.layerMemory({ config, webSocket: { host: "127.0.0.1", port: 0, tls: false, gateway: true } })

const urls = Effect.map(Node.Node, (node) => {
  const ws = node.transports.find((t) => t.kind === "ws")!.address
  return { ws, http: ws.replace(/^ws/, "http"), quic: node.transports.find((t) => t.kind === "quic")!.address, node }
})

describe("GET /metrics", () => {
  it.live("needs an authenticated caller by default: 401 without a token or with a bad one, Prometheus text with one", () =>
    Effect.gen(function*() {
      const { http } = yield* urls
      const key = yield* (yield* IdentityStore.IdentityStore).createApiKey({ scopes: [] })
      const token = Redacted.value(key.token)

      const anonymous = yield* get(`${http}/metrics`)
      expect(anonymous.status).toBe(401)
      expect(anonymous.headers.get("www-authenticate")).toBe("Bearer")
      expect(JSON.parse(anonymous.text)).toMatchObject({ code: "FORBIDDEN", message: "authentication required" })

      const before = authFailures("http")
      const guessed = "alk_guessedTOKENvalue123"
      expect((yield* get(`${http}/metrics`, guessed)).status).toBe(401)
      expect(authFailures("http")).toBe(before + 1)

      const scraped = yield* get(`${http}/metrics`, token)
      expect(scraped.status).toBe(200)
      expect(scraped.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8")
      const families = parse(scraped.text)
      expect(valueOf(families, "alknet_auth_failures_total", { transport: "http" })).toBe(before + 1)
      // What was sent as a token never shows, the good one nor the guessed one.
      expect(scraped.text).not.toContain(token)
      expect(scraped.text).not.toContain(guessed)
    }).pipe(Effect.scoped, Effect.provide(gatewayNode())))

  it.live("metrics.auth = public opens it", () =>
    Effect.gen(function*() {
      const { http } = yield* urls
      const scraped = yield* get(`${http}/metrics`)
      expect(scraped.status).toBe(200)
      parse(scraped.text)
    }).pipe(Effect.scoped, Effect.provide(gatewayNode({ metrics: { auth: "public" } }))))
})

describe("alknet_connections and alknet_auth_failures_total", () => {
  it.live("QUIC and WebSocket: counted while open on both ends, back to where they were once closed; bad tokens counted", () =>
    Effect.gen(function*() {
      const { node, quic, ws } = yield* urls
      const q0 = connections("quic")
      const w0 = connections("ws")
      const quicFailures = authFailures("quic")
      const wsFailures = authFailures("ws")

      const scope = yield* Scope.make()
      // A bad token rides on every request: each one counts (the call itself is answered, anonymously).
      const overQuic = yield* Scope.extend(
        Client.connect(quic, { expectedFingerprint: node.fingerprint, token: Redacted.make("alk_notAToken0000") }),
        scope
      )
      yield* overQuic.call("node/ping", {})
      expect(authFailures("quic")).toBe(quicFailures + 1)
      const overWs = yield* Scope.extend(Client.connect(ws, {}), scope)
      yield* overWs.call("node/ping", {})
      // This process is both ends: the client's connection and the node's.
      expect(connections("quic")).toBe(q0 + 2)
      expect(connections("ws")).toBe(w0 + 2)

      // A WebSocket upgrade with a bad token is refused (401) and counted.
      const refused = yield* Effect.flip(Effect.scoped(Client.connect(ws, { token: Redacted.make("alk_notAToken0000") })))
      expect(refused.message).toContain("401")
      expect(authFailures("ws")).toBe(wsFailures + 1)

      yield* Scope.close(scope, Exit.void)
      yield* eventually(Effect.sync(() => connections("quic") === q0 && connections("ws") === w0))
    }).pipe(Effect.scoped, Effect.provide(gatewayNode())), { timeout: 30_000 })

  it.scopedLive("a connection the node drops (too many bad tokens) leaves the gauge on both ends, the client's scope still open", () =>
    Effect.gen(function*() {
      const { node, quic } = yield* urls
      const q0 = connections("quic")
      const connection = yield* Client.connect(quic, { expectedFingerprint: node.fingerprint, token: Redacted.make("alk_notAToken0000") })
      yield* Effect.exit(connection.call("node/ping", {}))
      yield* connection.closed
      yield* eventually(Effect.sync(() => connections("quic") === q0))
    }).pipe(Effect.provide(gatewayNode({ rate_limits: { max_auth_attempts: 1 } }))), { timeout: 30_000 })

  it.live("in-memory: the dialer's end and the listener's end, until the client closes", () =>
    Effect.gen(function*() {
      const node = yield* Node.Node
      const address = node.transports.find((t) => t.kind === "memory")!.address
      const m0 = connections("memory")
      const scope = yield* Scope.make()
      const connection = yield* Scope.extend(CallClient.connect(address, { expectedFingerprint: node.fingerprint }), scope)
      yield* connection.call("node/ping", {})
      expect(connections("memory")).toBe(m0 + 2)
      yield* Scope.close(scope, Exit.void)
      yield* eventually(Effect.sync(() => connections("memory") === m0))
    }).pipe(
      Effect.scoped,
      Effect.provide(Layer.mergeAll(Memory.layerListener(), Memory.layerDialer).pipe(
        Layer.provideMerge(Node.layerMemory()),
        Layer.provideMerge(Memory.layerNetwork)
      ))
    ))
})

describe("SSH (alknet/ssh over QUIC)", () => {
  it.scopedLive("an SSH connection is counted while open; a refused key is an auth failure", () =>
    Effect.gen(function*() {
      const context = yield* Layer.build(Node.layerMemory({ config: { ssh: { auth_timeout_ms: 10000 } } }))
      const node = Context.get(context, Node.Node)
      const alice = Keys.fromSeed(new Uint8Array(32).fill(1))
      const mallory = Keys.fromSeed(new Uint8Array(32).fill(2))
      yield* Context.get(context, IdentityStore.IdentityStore).putPeer({
        peer_id: "alice",
        fingerprints: [Tls.ed25519Fingerprint(alice.publicKey)],
        scopes: [],
        resources: {},
        enabled: true
      })
      const [host, port] = node.transports[0]!.address.replace("quic://", "").split(":")
      const connect = Quic.connect({ host: host!, port: Number(port) }, { alpn: SshServer.ALPN, expectedFingerprint: node.fingerprint })
      const s0 = connections("ssh")
      const failures = authFailures("ssh")

      const scope = yield* Scope.make()
      yield* Scope.extend(Effect.flatMap(connect, (connection) => SshClient.open(connection, { key: alice })), scope)
      expect(connections("ssh")).toBe(s0 + 1)
      yield* Effect.flip(Effect.scoped(Effect.flatMap(connect, (connection) => SshClient.open(connection, { key: mallory }))))
      expect(authFailures("ssh")).toBeGreaterThanOrEqual(failures + 1)
      yield* Scope.close(scope, Exit.void)
      yield* eventually(Effect.sync(() => connections("ssh") === s0))
    }), { timeout: 30_000 })
})

describe("alknet_peer_links", () => {
  it.live("a link is counted in its state (connected; failed without its credential) until it is removed", () =>
    Effect.gen(function*() {
      const worker = Context.get(yield* Layer.build(Node.layerMemory()), Node.Node)
      const address = worker.transports.find((t) => t.kind === "quic")!.address
      const connected0 = links("connected")
      const failed0 = links("failed")
      const connecting0 = links("connecting")

      const scope = yield* Scope.make()
      yield* Layer.buildWithScope(
        Node.layerMemory({
          connect: [
            Schema.decodeSync(OutboundPeer)({ peer_id: "worker", address, fingerprint: worker.fingerprint }),
            // Its token's credential is not in the store: the link fails at once.
            Schema.decodeSync(OutboundPeer)({ peer_id: "broken", address, fingerprint: worker.fingerprint, token_credential: "absent" })
          ]
        }),
        scope
      )
      expect(links("failed")).toBe(failed0 + 1)
      yield* eventually(Effect.sync(() => links("connected") === connected0 + 1))
      expect(links("connecting")).toBe(connecting0)

      yield* Scope.close(scope, Exit.void)
      expect([links("connected"), links("failed"), links("connecting")]).toEqual([connected0, failed0, connecting0])
    }).pipe(Effect.scoped), { timeout: 30_000 })
})

describe("alknet_store_reloads_total", () => {
  it.scoped("config file: an applied reload is ok, a rejected one failed", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const file = path.join(dir, "alknet.json")
      fs.writeFileSync(file, "{}")
      const handle = Context.get(yield* Layer.build(ConfigFile.layer(file)), ConfigFile.ConfigFile)
      const ok = reloads("config", "ok")
      const failed = reloads("config", "failed")
      fs.writeFileSync(file, JSON.stringify({ peers: [Schema.encodeSync(PeerEntry)({ peer_id: "a", fingerprints: [ed25519(1)], scopes: [], resources: {}, enabled: true })] }))
      yield* handle.reload
      expect(reloads("config", "ok")).toBeGreaterThanOrEqual(ok + 1)
      fs.writeFileSync(file, "{ not json")
      yield* Effect.flip(handle.reload)
      expect(reloads("config", "failed")).toBeGreaterThanOrEqual(failed + 1)
    }))

  it.scopedLive("SQLite: another connection's commit is reloaded here and counted", () =>
    Effect.gen(function*() {
      const filename = path.join(yield* tempDir, "alknet.db")
      const here = Context.get(yield* Layer.build(SqliteStore.layer({ filename })), IdentityStore.IdentityStore)
      const there = Context.get(yield* Layer.build(SqliteStore.layer({ filename })), IdentityStore.IdentityStore)
      const ok = reloads("sqlite", "ok")
      yield* there.putPeer({ peer_id: "p", fingerprints: [ed25519(7)], scopes: [], resources: {}, enabled: true })
      yield* eventually(Effect.map(here.resolveFingerprint(ed25519(7)), Option.isSome))
      yield* eventually(Effect.sync(() => reloads("sqlite", "ok") >= ok + 1))
    }))

  if (serverUrl === undefined) {
    it.skip(`PostgreSQL: ${SKIP_MESSAGE}`, () => {})
  } else {
    it.scopedLive("PostgreSQL: another program's commit is notified, re-read here and counted", () =>
      Effect.gen(function*() {
        const url = yield* freshDatabase
        const here = Context.get(yield* Layer.build(PgStore.layer({ url: Redacted.make(url) })), IdentityStore.IdentityStore)
        const ok = reloads("postgres", "ok")
        yield* query(
          url,
          "INSERT INTO peers (peer_id, fingerprints, scopes, resources, enabled) VALUES ($1, $2, '[]', '{}', true)",
          ["p", JSON.stringify([ed25519(8)])]
        )
        yield* eventually(Effect.map(here.resolveFingerprint(ed25519(8)), Option.isSome))
        yield* eventually(Effect.sync(() => reloads("postgres", "ok") >= ok + 1))
      }), { timeout: 30_000 })
  }
})
