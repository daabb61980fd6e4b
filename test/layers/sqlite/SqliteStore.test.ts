import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Layer, Logger, Option } from "effect"
import * as child from "node:child_process"
import * as path from "node:path"
import * as SqliteStore from "../../../src/layers/sqlite/SqliteStore.js"
import { CredentialStore } from "../../../src/services/CredentialStore.js"
import { IdentityProvider } from "../../../src/services/IdentityProvider.js"
import { IdentityStore } from "../../../src/services/IdentityStore.js"
import { ed25519, eventually, idOf, peer, tempDir } from "../../shared/identity.js"
import { resolutionSuite } from "../../shared/resolutionSuite.js"
import { storeSuite } from "../../shared/storeSuite.js"
import { fingerprintOf } from "./writer.js"

const WRITER = path.join(import.meta.dirname, "writer.ts")

/** A fresh database file in a temp dir (removed with the test's scope). */
const freshFile = Effect.map(tempDir, (dir) => path.join(dir, "alknet.db"))
const fresh = () => Layer.unwrapScoped(Effect.map(freshFile, (filename) => SqliteStore.layer({ filename })))

storeSuite("sqlite", fresh)

resolutionSuite("sqlite", (peers, apiKeys) =>
  Layer.effectDiscard(
    Effect.flatMap(IdentityStore, (store) =>
      Effect.zipRight(
        Effect.forEach(peers, store.putPeer, { discard: true }),
        Effect.forEach(apiKeys, store.putApiKey, { discard: true })
      ))
  ).pipe(Layer.provideMerge(fresh())))

/** Run `node --import tsx writer.ts <args>`; resolves with the exit code. Killed if the test ends first. */
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

/** A raw connection to the same file, as another program would have. */
const rawClient = (filename: string) => SqliteClient.layer({ filename })

describe("SqliteStore", () => {
  it.scoped("entries persist across reopening; migrations run once", () =>
    Effect.gen(function*() {
      const filename = yield* freshFile
      const write = Effect.gen(function*() {
        const store = yield* IdentityStore
        yield* store.putPeer(peer({ peer_id: "kept", fingerprints: [ed25519(1)] }))
        const { token } = yield* store.createApiKey({ scopes: ["s"] })
        yield* (yield* CredentialStore).put("p", { key_version: 2, salt: "", iv: "", data: "" })
        return token
      })
      const token = yield* Effect.scoped(Effect.provide(write, SqliteStore.layer({ filename })))
      const read = Effect.gen(function*() {
        const store = yield* IdentityStore
        expect(idOf(yield* store.resolveFingerprint(ed25519(1)))).toBe("kept")
        expect((yield* store.resolveToken(token))._tag).toBe("Some")
        expect(yield* (yield* CredentialStore).list).toEqual(["p"])
      })
      yield* Effect.scoped(Effect.provide(read, SqliteStore.layer({ filename })))
      const version = yield* Effect.provide(
        Effect.flatMap(SqliteClient.SqliteClient, (sql) => sql<{ user_version: number }>`PRAGMA user_version`),
        rawClient(filename)
      )
      expect(version[0]?.user_version).toBe(1)
    }))

  it.scoped("a database that cannot be opened is a Backend error naming the file", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const filename = path.join(dir, "missing-dir", "x.db")
      const error = yield* Effect.flip(Effect.provide(IdentityStore, SqliteStore.layer({ filename })))
      expect(error.reason).toBe("Backend")
      expect(error.message).toContain(filename)
    }))

  it.scopedLive("a commit by another connection is picked up without any write or restart here", () =>
    Effect.gen(function*() {
      const filename = yield* freshFile
      const here = yield* Layer.build(SqliteStore.layer({ filename }))
      const there = yield* Layer.build(SqliteStore.layer({ filename }))
      const reader = yield* Effect.provide(IdentityProvider, here)
      const credentials = yield* Effect.provide(CredentialStore, here)
      yield* Effect.provide(
        Effect.gen(function*() {
          yield* (yield* IdentityStore).putPeer(peer({ peer_id: "remote", fingerprints: [ed25519(9)] }))
          yield* (yield* CredentialStore).put("svc", { key_version: 2, salt: "", iv: "", data: "" })
        }),
        there
      )
      yield* eventually(Effect.map(reader.resolveFingerprint(ed25519(9)), Option.isSome))
      yield* eventually(Effect.map(credentials.get("svc"), Option.isSome))
      yield* Effect.provide(Effect.flatMap(IdentityStore, (s) => s.removePeer("remote")), there)
      yield* eventually(Effect.map(reader.resolveFingerprint(ed25519(9)), Option.isNone))
    }))

  it.scopedLive("a row that does not decode is rejected with a log line; the previous index keeps serving", () =>
    Effect.gen(function*() {
      const filename = yield* freshFile
      const logged = yield* Deferred.make<string>()
      const logger = Logger.replace(
        Logger.defaultLogger,
        Logger.make(({ message }) => {
          const line = Array.isArray(message) ? message.join(" ") : String(message)
          if (line.includes("reload rejected")) Deferred.unsafeDone(logged, Effect.succeed(line))
        })
      )
      const here = yield* Layer.build(SqliteStore.layer({ filename }).pipe(Layer.provide(logger)))
      const store = yield* Effect.provide(IdentityStore, here)
      yield* store.putPeer(peer({ peer_id: "good", fingerprints: [ed25519(1)] }))
      const raw = yield* Layer.build(rawClient(filename))
      const sql = yield* Effect.provide(SqliteClient.SqliteClient, raw)
      // Valid JSON, wrong content: passes the table's CHECK, fails decoding.
      yield* sql`INSERT INTO peers (peer_id, fingerprints) VALUES ('bad', '["not-a-fingerprint"]')`
      yield* sql`INSERT INTO peers (peer_id, fingerprints) VALUES ('later', ${JSON.stringify([ed25519(2)])})`
      const line = yield* Deferred.await(logged)
      expect(line).toContain(`peers row "bad"`)
      expect(line).toContain("fingerprints[0]")
      expect(idOf(yield* store.resolveFingerprint(ed25519(1)))).toBe("good")
      expect(idOf(yield* store.resolveFingerprint(ed25519(2)))).toBeUndefined()
      // A write here commits, but says that the index could not follow.
      const stale = yield* Effect.flip(store.putPeer(peer({ peer_id: "mine", fingerprints: [ed25519(3)] })))
      expect(stale.reason).toBe("Serialization")
      expect(stale.message).toContain(`put peer: committed, but the index keeps its previous state: peers row "bad"`)
      expect(idOf(yield* store.resolveFingerprint(ed25519(3)))).toBeUndefined()
      // Once the bad row is fixed, everything committed meanwhile appears.
      yield* sql`DELETE FROM peers WHERE peer_id = 'bad'`
      yield* eventually(Effect.map(store.resolveFingerprint(ed25519(2)), Option.isSome))
      expect((yield* store.listPeers).map((p) => p.peer_id)).toEqual(["good", "later", "mine"])
    }))

  it.scoped("a write the database refuses is a Backend error without SQL text; the previous index keeps serving", () =>
    Effect.gen(function*() {
      const filename = yield* freshFile
      const store = yield* Effect.provide(IdentityStore, yield* Layer.build(SqliteStore.layer({ filename })))
      yield* store.putPeer(peer({ peer_id: "before", fingerprints: [ed25519(1)] }))
      const sql = yield* Effect.provide(SqliteClient.SqliteClient, yield* Layer.build(rawClient(filename)))
      yield* sql`CREATE TRIGGER refuse BEFORE INSERT ON peers BEGIN SELECT RAISE(ABORT, 'refused by policy'); END`
      const error = yield* Effect.flip(store.putPeer(peer({ peer_id: "after", fingerprints: [ed25519(2)] })))
      expect(error.reason).toBe("Backend")
      expect(error.message).toBe("sqlite: put peer failed (SQLITE_CONSTRAINT_TRIGGER)")
      expect(idOf(yield* store.resolveFingerprint(ed25519(1)))).toBe("before")
      expect(idOf(yield* store.resolveFingerprint(ed25519(2)))).toBeUndefined()
      expect((yield* store.listPeers).map((p) => p.peer_id)).toEqual(["before"])
    }))

  it.scopedLive("a peer written by another process resolves here without a restart", () =>
    Effect.gen(function*() {
      const filename = yield* freshFile
      const provider = yield* Effect.provide(IdentityProvider, yield* Layer.build(SqliteStore.layer({ filename })))
      expect(idOf(yield* provider.resolveFingerprint(fingerprintOf("child-0")))).toBeUndefined()
      expect(yield* runWriter(filename, "many", "child", "1")).toBe(0)
      yield* eventually(Effect.map(provider.resolveFingerprint(fingerprintOf("child-0")), Option.isSome))
      const identity = Option.getOrThrow(yield* provider.resolveFingerprint(fingerprintOf("child-0")))
      expect(identity).toEqual({ id: "child-0", scopes: ["written"], resources: {} })
    }))

  it.scopedLive("concurrent writers (two processes, two connections here) do not corrupt the database", () =>
    Effect.gen(function*() {
      const filename = yield* freshFile
      const processes = ["a", "b"]
      const perWriter = 30
      // The children start on a file that does not exist yet: creation and migration race too.
      const children = yield* Effect.forkScoped(
        Effect.forEach(processes, (w) => runWriter(filename, "many", w, String(perWriter)), { concurrency: "unbounded" })
      )
      const store = yield* Effect.provide(IdentityStore, yield* Layer.build(SqliteStore.layer({ filename })))
      const second = yield* Effect.provide(IdentityStore, yield* Layer.build(SqliteStore.layer({ filename })))
      const local = [["here", store], ["conn", second]] as const
      yield* Effect.forEach(
        local.flatMap(([w, s]) => Array.from({ length: perWriter }, (_, i) => [`${w}-${i}`, s] as const)),
        ([id, s]) => s.putPeer(peer({ peer_id: id, fingerprints: [fingerprintOf(id)] })),
        { concurrency: 4, discard: true }
      )
      expect(yield* children.await.pipe(Effect.flatten)).toEqual([0, 0])
      const all = [...processes, ...local.map(([w]) => w)].flatMap((w) =>
        Array.from({ length: perWriter }, (_, i) => `${w}-${i}`)
      )
      yield* eventually(Effect.map(store.listPeers, (peers) => peers.length === all.length))
      for (const id of all) expect(idOf(yield* store.resolveFingerprint(fingerprintOf(id)))).toBe(id)
      const sql = yield* Effect.provide(SqliteClient.SqliteClient, yield* Layer.build(rawClient(filename)))
      expect(yield* sql`PRAGMA integrity_check`).toEqual([{ integrity_check: "ok" }])
      expect(yield* sql`SELECT count(*) AS n FROM peers`).toEqual([{ n: all.length }])
    }))
})
