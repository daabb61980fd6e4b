/**
 * The shared store suite: the same assertions against every backend of `IdentityStore` and `CredentialStore`
 * (memory, SQLite). `stores()` builds a fresh, empty backend per test.
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Either, Option, Redacted, Stream } from "effect"
import type { Layer, Scope } from "effect"
import * as util from "node:util"
import type { StoreError } from "../../src/errors/StoreError.js"
import type { EncryptedData } from "../../src/schema/EncryptedData.js"
import { CredentialStore } from "../../src/services/CredentialStore.js"
import type { Service as Credentials } from "../../src/services/CredentialStore.js"
import { IdentityProvider } from "../../src/services/IdentityProvider.js"
import { IdentityStore, issuePeerToken } from "../../src/services/IdentityStore.js"
import type { Service as Store } from "../../src/services/IdentityStore.js"
import * as Token from "../../src/services/Token.js"
import { apiKey, ed25519, idOf, peer } from "./identity.js"

export type Stores = () => Layer.Layer<
  IdentityStore | IdentityProvider | CredentialStore,
  StoreError,
  Scope.Scope
>

const blob = (fill: string, key_version = 2): EncryptedData => ({
  key_version,
  salt: `${fill.repeat(43)}=`,
  iv: fill.repeat(16),
  data: `${fill.repeat(7)}=`
})

const failure = <A, R>(effect: Effect.Effect<A, StoreError, R>) =>
  Effect.map(Effect.either(effect), (result) => Either.isLeft(result) ? result.left : undefined)

export const storeSuite = (backend: string, stores: Stores) => {
  const withStore = <A, E>(
    body: (store: Store) => Effect.Effect<A, E, IdentityStore | IdentityProvider | CredentialStore>
  ) =>
    Effect.flatMap(IdentityStore, body).pipe(Effect.provide(stores()))

  describe(`IdentityStore — ${backend}`, () => {
    it.scoped("a written peer is visible to the very next read, through the store and its provider", () =>
      withStore((store) =>
        Effect.gen(function*() {
          const provider = yield* IdentityProvider
          yield* store.putPeer(peer({ peer_id: "w1", fingerprints: [ed25519(1)], scopes: ["a"] }))
          expect(idOf(yield* store.resolveFingerprint(ed25519(1)))).toBe("w1")
          expect(idOf(yield* provider.resolveFingerprint(ed25519(1)))).toBe("w1")
          expect(Option.getOrThrow(yield* store.getPeer("w1")).scopes).toEqual(["a"])
          expect(yield* store.getPeer("nobody")).toEqual(Option.none())
        })))

    it.scoped("putPeer upserts in place: order is kept, the old credentials stop resolving", () =>
      withStore((store) =>
        Effect.gen(function*() {
          yield* store.putPeer(peer({ peer_id: "a", fingerprints: [ed25519(1)] }))
          yield* store.putPeer(peer({ peer_id: "b", fingerprints: [ed25519(1), ed25519(2)] }))
          expect(idOf(yield* store.resolveFingerprint(ed25519(1)))).toBe("a")
          yield* store.putPeer(peer({ peer_id: "a", fingerprints: [ed25519(3)], display_name: "renamed" }))
          expect((yield* store.listPeers).map((p) => p.peer_id)).toEqual(["a", "b"])
          expect(idOf(yield* store.resolveFingerprint(ed25519(1)))).toBe("b")
          expect(idOf(yield* store.resolveFingerprint(ed25519(3)))).toBe("a")
          expect(Option.getOrThrow(yield* store.getPeer("a")).display_name).toBe("renamed")
        })))

    it.scoped("updatePeer replaces an existing peer and fails NotFound for a missing one", () =>
      withStore((store) =>
        Effect.gen(function*() {
          const missing = yield* failure(store.updatePeer(peer({ peer_id: "ghost" })))
          expect(missing?.reason).toBe("NotFound")
          expect(missing?.message).toBe("peer not found: ghost")
          expect(yield* store.listPeers).toEqual([])
          yield* store.putPeer(peer({ peer_id: "w", fingerprints: [ed25519(1)] }))
          yield* store.updatePeer(peer({ peer_id: "w", fingerprints: [ed25519(1)], enabled: false }))
          expect(idOf(yield* store.resolveFingerprint(ed25519(1)))).toBeUndefined()
          expect(Option.getOrThrow(yield* store.getPeer("w")).enabled).toBe(false)
        })))

    it.scoped("removePeer removes the peer and its credentials; removing a missing one is NotFound", () =>
      withStore((store) =>
        Effect.gen(function*() {
          yield* store.putPeer(peer({ peer_id: "w", fingerprints: [ed25519(1)] }))
          yield* store.removePeer("w")
          expect(idOf(yield* store.resolveFingerprint(ed25519(1)))).toBeUndefined()
          expect((yield* failure(store.removePeer("w")))?.reason).toBe("NotFound")
        })))

    it.scoped("an invalid entry is rejected as Serialization, naming the field, and changes nothing", () =>
      withStore((store) =>
        Effect.gen(function*() {
          yield* store.putPeer(peer({ peer_id: "ok", fingerprints: [ed25519(1)] }))
          const good = peer({ peer_id: "ok2" })
          const badId = yield* failure(store.putPeer({ ...good, peer_id: "has space" }))
          expect(badId?.reason).toBe("Serialization")
          expect(badId?.message).toContain("peer_id")
          const badPrint = yield* failure(store.putPeer({ ...good, fingerprints: ["ed25519:XYZ"] }))
          expect(badPrint?.message).toContain("fingerprints[0]")
          const key = apiKey({ prefix: "alk_abcd", hash: Token.hash(Redacted.make("t")) })
          const badKey = yield* failure(store.putApiKey({ ...key, hash: "md5:00" }))
          expect(badKey?.message).toContain("hash")
          expect((yield* store.listPeers).map((p) => p.peer_id)).toEqual(["ok"])
          expect(yield* store.listApiKeys).toEqual([])
        })))

    it.scoped("createApiKey returns the token once (redacted) and stores only its hash; removeApiKey revokes", () =>
      withStore((store) =>
        Effect.gen(function*() {
          const { entry, token } = yield* store.createApiKey({ scopes: ["ops"], description: "deploy bot" })
          const raw = Redacted.value(token)
          expect(raw).toMatch(/^alk_[A-Za-z0-9_-]{32}$/)
          expect(entry.prefix).toBe(raw.slice(0, 8))
          expect(entry.hash).toBe(Token.hash(token))
          expect(String(token)).not.toContain(raw)
          expect(util.inspect(token)).not.toContain(raw)
          expect(JSON.stringify({ token })).not.toContain(raw)
          const listed = yield* store.listApiKeys
          expect(listed).toEqual([entry])
          expect(JSON.stringify(listed)).not.toContain(raw.slice(8))
          expect(Option.getOrThrow(yield* store.resolveToken(token))).toEqual({
            id: entry.prefix,
            scopes: ["ops"],
            resources: {}
          })
          yield* store.removeApiKey(entry.prefix)
          expect(idOf(yield* store.resolveToken(token))).toBeUndefined()
          expect((yield* failure(store.removeApiKey(entry.prefix)))?.reason).toBe("NotFound")
        })))

    it.scoped("putApiKey upserts by prefix: the new hash replaces the old", () =>
      withStore((store) =>
        Effect.gen(function*() {
          const first = yield* Token.generate
          const raw = Redacted.value(first.token)
          const second = Redacted.make(first.prefix + raw.slice(8).split("").reverse().join(""))
          yield* store.putApiKey(apiKey({ prefix: first.prefix, hash: first.hash }))
          yield* store.putApiKey(apiKey({ prefix: first.prefix, hash: Token.hash(second), scopes: ["x"] }))
          expect(idOf(yield* store.resolveToken(first.token))).toBeUndefined()
          expect(idOf(yield* store.resolveToken(second))).toBe(first.prefix)
          expect((yield* store.listApiKeys).length).toBe(1)
        })))

    it.scoped("issuePeerToken gives a peer a token; issuing again revokes the previous one", () =>
      withStore((store) =>
        Effect.gen(function*() {
          yield* store.putPeer(peer({ peer_id: "w", fingerprints: [ed25519(1)] }))
          const first = yield* issuePeerToken("w")
          expect(idOf(yield* store.resolveToken(first))).toBe("w")
          const second = yield* issuePeerToken("w")
          expect(idOf(yield* store.resolveToken(first))).toBeUndefined()
          expect(idOf(yield* store.resolveToken(second))).toBe("w")
          expect(idOf(yield* store.resolveFingerprint(ed25519(1)))).toBe("w")
          expect((yield* failure(issuePeerToken("nobody")))?.reason).toBe("NotFound")
        })))

    it.scoped("changes emits the current version, then one per write", () =>
      withStore((store) =>
        Effect.gen(function*() {
          const before = Chunk.unsafeHead(yield* Stream.runCollect(Stream.take(store.changes, 1)))
          yield* store.putPeer(peer({ peer_id: "w" }))
          const after = Chunk.unsafeHead(yield* Stream.runCollect(Stream.take(store.changes, 1)))
          expect(after).toBeGreaterThan(before)
          const failed = yield* failure(store.removePeer("nobody"))
          expect(failed?.reason).toBe("NotFound")
          expect(Chunk.unsafeHead(yield* Stream.runCollect(Stream.take(store.changes, 1)))).toBe(after)
        })))

    it.scoped("concurrent writers through one store lose nothing", () =>
      withStore((store) =>
        Effect.gen(function*() {
          yield* Effect.forEach(
            Array.from({ length: 40 }, (_, i) => i),
            (i) => store.putPeer(peer({ peer_id: `p${i}`, fingerprints: [ed25519(i)] })),
            { concurrency: "unbounded", discard: true }
          )
          expect((yield* store.listPeers).length).toBe(40)
          for (let i = 0; i < 40; i++) expect(idOf(yield* store.resolveFingerprint(ed25519(i)))).toBe(`p${i}`)
        })))
  })

  describe(`CredentialStore — ${backend}`, () => {
    const withCredentials = <A, E>(body: (store: Credentials) => Effect.Effect<A, E>) =>
      Effect.flatMap(CredentialStore, body).pipe(Effect.provide(stores()))

    it.scoped("put / get / list / delete by provider; put replaces", () =>
      withCredentials((store) =>
        Effect.gen(function*() {
          expect(yield* store.get("github")).toEqual(Option.none())
          yield* store.put("github", blob("A"))
          yield* store.put("aws", blob("B"))
          expect(yield* store.get("github")).toEqual(Option.some(blob("A")))
          expect(yield* store.list).toEqual(["aws", "github"])
          yield* store.put("github", blob("C", 3))
          expect(yield* store.get("github")).toEqual(Option.some(blob("C", 3)))
          yield* store.delete("github")
          expect(yield* store.get("github")).toEqual(Option.none())
          expect(yield* store.list).toEqual(["aws"])
        })))

    it.scoped("delete of a missing provider is NotFound; a malformed blob is Serialization and stores nothing", () =>
      withCredentials((store) =>
        Effect.gen(function*() {
          expect((yield* failure(store.delete("none")))?.reason).toBe("NotFound")
          const bad = yield* failure(store.put("x", { ...blob("A"), iv: "not base64!" }))
          expect(bad?.reason).toBe("Serialization")
          expect(bad?.message).toContain("iv")
          expect((yield* failure(store.put("", blob("A"))))?.reason).toBe("Serialization")
          expect(yield* store.list).toEqual([])
        })))
  })
}
