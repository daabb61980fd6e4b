import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Layer, Logger, Option } from "effect"
import * as child from "node:child_process"
import * as path from "node:path"
import * as PgStore from "../../../src/layers/pg/PgStore.js"
import { CredentialStore } from "../../../src/services/CredentialStore.js"
import { IdentityStore } from "../../../src/services/IdentityStore.js"
import { StoreStatus } from "../../../src/services/StoreStatus.js"
import { ed25519, eventually, idOf, peer } from "../../shared/identity.js"
import { resolutionSuite } from "../../shared/resolutionSuite.js"
import { storeSuite } from "../../shared/storeSuite.js"
import { fingerprintOf } from "../sqlite/writer.js"
import { freshDatabase, proxy, query, redacted, serverUrl, SKIP_MESSAGE, withPort } from "./harness.js"

const WRITER = path.join(import.meta.dirname, "other-node.ts")

const store = (url: string) => PgStore.layer({ url: redacted(url) })
const fresh = () => Layer.unwrapScoped(Effect.map(freshDatabase, store))

/** Run `node --import tsx other-node.ts <args>`; resolves with the exit code. Killed if the test ends first. */
const runWriter = (...args: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.sync(() => child.spawn(process.execPath, ["--import", "tsx", WRITER, ...args], { stdio: "inherit" })),
    (proc) => Effect.sync(() => proc.exitCode === null && proc.kill())
  ).pipe(
    Effect.flatMap((proc) =>
      Effect.async<number>((resume) => {
        proc.once("exit", (code) => resume(Effect.succeed(code ?? -1)))
      })
    )
  )

/** A logger that completes `line` with the first message containing `text`. */
const watchLog = (text: string) =>
  Effect.map(Deferred.make<string>(), (line) => ({
    line,
    logger: Logger.replace(
      Logger.defaultLogger,
      Logger.make(({ message }) => {
        const m = Array.isArray(message) ? message.join(" ") : String(message)
        if (m.includes(text)) Deferred.unsafeDone(line, Effect.succeed(m))
      })
    )
  }))

if (serverUrl === undefined) {
  describe("PgStore", () => {
    it.skip(SKIP_MESSAGE, () => {})
  })
} else {
  storeSuite("postgres", fresh)

  resolutionSuite("postgres", (peers, apiKeys) =>
    Layer.effectDiscard(
      Effect.flatMap(IdentityStore, (s) =>
        Effect.zipRight(
          Effect.forEach(peers, s.putPeer, { discard: true }),
          Effect.forEach(apiKeys, s.putApiKey, { discard: true })
        ))
    ).pipe(Layer.provideMerge(fresh())))

  describe("PgStore", () => {
    it.scopedLive("nodes starting at once migrate a fresh database once; a newer schema is refused", () =>
      Effect.gen(function*() {
        const url = yield* freshDatabase
        const stores = yield* Effect.forEach([1, 2, 3], () => Layer.build(store(url)), { concurrency: "unbounded" })
        const [a, b] = yield* Effect.forEach(stores.slice(0, 2), (ctx) => Effect.provide(IdentityStore, ctx))
        yield* a!.putPeer(peer({ peer_id: "kept", fingerprints: [ed25519(1)] }))
        yield* eventually(Effect.map(b!.resolveFingerprint(ed25519(1)), Option.isSome))
        expect(yield* query(url, "SELECT version FROM alknet_schema")).toEqual([{ version: PgStore.SCHEMA_VERSION }])
        yield* query(url, "UPDATE alknet_schema SET version = 99")
        const error = yield* Effect.flip(Effect.scoped(Layer.build(store(url))))
        expect(error.reason).toBe("Backend")
        expect(error.message).toContain("schema is version 99, newer than this node knows")
      }))

    it.scoped("an unreachable server is a Backend error naming host, port and database, never the password", () =>
      Effect.gen(function*() {
        const url = withPort("postgres://someone:hunter2secret@127.0.0.1/alknet", 1)
        const error = yield* Effect.flip(Effect.scoped(Layer.build(store(url))))
        expect(error.reason).toBe("Backend")
        expect(error.message).toContain("127.0.0.1:1/alknet")
        expect(error.message).not.toContain("hunter2secret")
      }))

    it.scopedLive("a peer added and a token revoked by another process are applied here without a restart", () =>
      Effect.gen(function*() {
        const url = yield* freshDatabase
        const here = yield* Effect.provide(IdentityStore, yield* Layer.build(store(url)))
        const { entry, token } = yield* here.createApiKey({ scopes: ["ops"] })
        expect(idOf(yield* here.resolveToken(token))).toBe(entry.prefix)
        expect(yield* runWriter(url, "many", "child", "1")).toBe(0)
        yield* eventually(Effect.map(here.resolveFingerprint(fingerprintOf("child-0")), Option.isSome))
        expect(Option.getOrThrow(yield* here.resolveFingerprint(fingerprintOf("child-0")))).toEqual({
          id: "child-0",
          scopes: ["written"],
          resources: {}
        })
        expect(yield* runWriter(url, "revoke", entry.prefix)).toBe(0)
        yield* eventually(Effect.map(here.resolveToken(token), Option.isNone))
        expect(yield* here.listApiKeys).toEqual([])
      }))

    it.scopedLive("cut off from the database, a node keeps serving; it converges when the database is back", () =>
      Effect.gen(function*() {
        const url = yield* freshDatabase
        const link = yield* proxy
        const lost = yield* watchLog("connection lost")
        const cutOff = yield* Layer.build(store(withPort(url, link.port)).pipe(Layer.provide(lost.logger)))
        const node = yield* Effect.provide(IdentityStore, cutOff)
        const status = yield* Effect.provide(StoreStatus, cutOff)
        const credentials = yield* Effect.provide(CredentialStore, cutOff)
        const other = yield* Effect.provide(IdentityStore, yield* Layer.build(store(url)))
        const otherCredentials = yield* Effect.provide(CredentialStore, yield* Layer.build(store(url)))
        expect((yield* status.current).state).toBe("connected")

        yield* other.putPeer(peer({ peer_id: "before", fingerprints: [ed25519(1)] }))
        yield* eventually(Effect.map(node.resolveFingerprint(ed25519(1)), Option.isSome))

        yield* link.down
        yield* eventually(Effect.map(status.current, (s) => s.state === "disconnected"))
        expect(yield* Deferred.await(lost.line)).toContain("serving the last good index")
        // Changes made meanwhile: notifications for them never reach the node.
        yield* other.removePeer("before")
        yield* other.putPeer(peer({ peer_id: "meanwhile", fingerprints: [ed25519(2)] }))
        yield* otherCredentials.put("svc", { key_version: 2, salt: "", iv: "", data: "" })
        // Still serving what it knew; its own writes fail plainly.
        expect(idOf(yield* node.resolveFingerprint(ed25519(1)))).toBe("before")
        const refused = yield* Effect.flip(node.putPeer(peer({ peer_id: "mine", fingerprints: [ed25519(3)] })))
        expect(refused.reason).toBe("Backend")
        expect(refused.message).toMatch(/^postgres: put peer failed \(/)

        yield* link.up
        yield* eventually(Effect.map(status.current, (s) => s.state === "connected"))
        yield* eventually(Effect.map(node.resolveFingerprint(ed25519(2)), Option.isSome))
        expect(idOf(yield* node.resolveFingerprint(ed25519(1)))).toBeUndefined()
        expect((yield* credentials.get("svc"))._tag).toBe("Some")
        expect((yield* node.listPeers).map((p) => p.peer_id)).toEqual(["meanwhile"])
        // Its own writes work again (the pool dropped its dead connections), and reach the other node.
        yield* node.putPeer(peer({ peer_id: "mine", fingerprints: [ed25519(3)] }))
        yield* eventually(Effect.map(other.resolveFingerprint(ed25519(3)), Option.isSome))
      }))

    it.scopedLive("the server ends the node's connections (as on a restart): it reconnects and keeps up", () =>
      Effect.gen(function*() {
        const url = yield* freshDatabase
        const here = yield* Layer.build(store(url))
        const node = yield* Effect.provide(IdentityStore, here)
        const status = yield* Effect.provide(StoreStatus, here)
        const other = yield* Effect.provide(IdentityStore, yield* Layer.build(store(url)))
        const database = new URL(url).pathname.slice(1)
        const before = (yield* status.current).since
        const ended = yield* query(
          url,
          `SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity
            WHERE datname = $1 AND application_name IN ('alknet', 'alknet-listen') AND pid <> pg_backend_pid()`,
          [database]
        )
        expect(ended.length).toBeGreaterThanOrEqual(2) // both nodes' listeners, at least
        // Lost, then back: the last state change is a new one.
        yield* eventually(Effect.map(status.current, (s) => s.state === "connected" && s.since > before))
        yield* other.putPeer(peer({ peer_id: "after", fingerprints: [ed25519(4)] }))
        yield* eventually(Effect.map(node.resolveFingerprint(ed25519(4)), Option.isSome))
        yield* node.removePeer("after")
        yield* eventually(Effect.map(other.resolveFingerprint(ed25519(4)), Option.isNone))
      }))

    it.scopedLive("a row that does not decode is logged and ignored; every other change still applies", () =>
      Effect.gen(function*() {
        const url = yield* freshDatabase
        const rejected = yield* watchLog(`peers row "bad"`)
        const here = yield* Layer.build(store(url).pipe(Layer.provide(rejected.logger)))
        const node = yield* Effect.provide(IdentityStore, here)
        yield* node.putPeer(peer({ peer_id: "good", fingerprints: [ed25519(1)] }))
        // Valid JSON, wrong content: the column accepts it, decoding does not.
        yield* query(url, `INSERT INTO peers (peer_id, fingerprints) VALUES ('bad', '["not-a-fingerprint"]')`)
        expect(yield* Deferred.await(rejected.line)).toContain("fingerprints[0]")
        // A bad edit of a good row: that peer keeps its previous entry.
        yield* query(url, `UPDATE peers SET fingerprints = '["nope"]' WHERE peer_id = 'good'`)
        yield* query(url, `INSERT INTO peers (peer_id, fingerprints) VALUES ('later', $1)`, [
          JSON.stringify([ed25519(2)])
        ])
        yield* eventually(Effect.map(node.resolveFingerprint(ed25519(2)), Option.isSome))
        expect(idOf(yield* node.resolveFingerprint(ed25519(1)))).toBe("good")
        expect((yield* node.listPeers).map((p) => p.peer_id)).toEqual(["good", "later"])
        // A fresh node on the same database: the same entries, the bad rows left out.
        const again = yield* Effect.provide(IdentityStore, yield* Layer.build(store(url)))
        expect((yield* again.listPeers).map((p) => p.peer_id)).toEqual(["later"])
        // Once fixed, the rows apply.
        yield* query(url, `UPDATE peers SET fingerprints = $1 WHERE peer_id IN ('good', 'bad')`, [
          JSON.stringify([ed25519(5)])
        ])
        yield* eventually(Effect.map(node.listPeers, (ps) => ps.length === 3))
        expect(idOf(yield* node.resolveFingerprint(ed25519(5)))).toBe("good")
        expect(idOf(yield* node.resolveFingerprint(ed25519(1)))).toBeUndefined()
      }))

    it.scopedLive("bulk changes by another program (1,500 rows in one statement, TRUNCATE) are applied", () =>
      Effect.gen(function*() {
        const url = yield* freshDatabase
        const node = yield* Effect.provide(IdentityStore, yield* Layer.build(store(url)))
        yield* query(
          url,
          `INSERT INTO peers (peer_id, fingerprints)
            SELECT 'bulk-' || n, jsonb_build_array('ed25519:' || lpad(to_hex(n), 64, '0')) FROM generate_series(1, 1500) n`
        )
        yield* eventually(Effect.map(node.listPeers, (peers) => peers.length === 1500))
        expect(idOf(yield* node.resolveFingerprint(ed25519(1500)))).toBe("bulk-1500")
        expect((yield* node.listPeers)[0]?.peer_id).toBe("bulk-1")
        yield* query(url, "TRUNCATE peers")
        yield* eventually(Effect.map(node.listPeers, (peers) => peers.length === 0))
        expect(idOf(yield* node.resolveFingerprint(ed25519(1)))).toBeUndefined()
      }))

    it.scoped("a write the database refuses is a Backend error without SQL text; the index keeps serving", () =>
      Effect.gen(function*() {
        const url = yield* freshDatabase
        const node = yield* Effect.provide(IdentityStore, yield* Layer.build(store(url)))
        yield* node.putPeer(peer({ peer_id: "before", fingerprints: [ed25519(1)] }))
        yield* query(
          url,
          `CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by policy'; END $$`
        )
        yield* query(url, `CREATE TRIGGER refuse BEFORE INSERT ON peers FOR EACH ROW EXECUTE FUNCTION refuse()`)
        const error = yield* Effect.flip(node.putPeer(peer({ peer_id: "after", fingerprints: [ed25519(2)] })))
        expect(error.reason).toBe("Backend")
        expect(error.message).toBe("postgres: put peer failed (SQLSTATE P0001)")
        expect((yield* node.listPeers).map((p) => p.peer_id)).toEqual(["before"])
      }))

    it.scopedLive("concurrent writers (two processes, two stores here) lose no update", () =>
      Effect.gen(function*() {
        const url = yield* freshDatabase
        const processes = ["a", "b"]
        const perWriter = 30
        const children = yield* Effect.forkScoped(
          Effect.forEach(processes, (w) => runWriter(url, "many", w, String(perWriter)), { concurrency: "unbounded" })
        )
        const first = yield* Effect.provide(IdentityStore, yield* Layer.build(store(url)))
        const second = yield* Effect.provide(IdentityStore, yield* Layer.build(store(url)))
        const local = [["here", first], ["conn", second]] as const
        yield* Effect.forEach(
          local.flatMap(([w, s]) => Array.from({ length: perWriter }, (_, i) => [`${w}-${i}`, s] as const)),
          ([id, s]) => s.putPeer(peer({ peer_id: id, fingerprints: [fingerprintOf(id)] })),
          { concurrency: 4, discard: true }
        )
        expect(yield* children.await.pipe(Effect.flatten)).toEqual([0, 0])
        const all = [...processes, ...local.map(([w]) => w)].flatMap((w) =>
          Array.from({ length: perWriter }, (_, i) => `${w}-${i}`)
        )
        for (const s of [first, second]) {
          yield* eventually(Effect.map(s.listPeers, (peers) => peers.length === all.length))
          for (const id of all) expect(idOf(yield* s.resolveFingerprint(fingerprintOf(id)))).toBe(id)
        }
        expect(yield* query(url, "SELECT count(*)::int AS n FROM peers")).toEqual([{ n: all.length }])
      }))
  })
}
