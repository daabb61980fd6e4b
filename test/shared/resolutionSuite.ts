/**
 * SPEC §10 resolution rules, run against every backend that can serve a given set of peers and API keys
 * (memory, SQLite, config file).
 */
import { describe, expect, it } from "@effect/vitest"
import { DateTime, Effect, Option, Redacted, TestClock } from "effect"
import type { Layer, Scope } from "effect"
import type { ApiKeyEntry } from "../../src/schema/ApiKeyEntry.js"
import type { PeerEntry } from "../../src/schema/PeerEntry.js"
import { IdentityProvider } from "../../src/services/IdentityProvider.js"
import type { Service as Provider } from "../../src/services/IdentityProvider.js"
import * as Token from "../../src/services/Token.js"
import { apiKey, ed25519, idOf, peer, sha256 } from "./identity.js"

/** Build a provider serving exactly these entries (in this order). */
export type Given = (
  peers: ReadonlyArray<PeerEntry>,
  apiKeys: ReadonlyArray<ApiKeyEntry>
) => Layer.Layer<IdentityProvider, unknown, Scope.Scope>

const token = (raw: string) => Redacted.make(raw)

export const resolutionSuite = (backend: string, given: Given) =>
  describe(`resolution rules (SPEC §10) — ${backend}`, () => {
    const withProvider = <A, E>(
      peers: ReadonlyArray<PeerEntry>,
      apiKeys: ReadonlyArray<ApiKeyEntry>,
      body: (provider: Provider) => Effect.Effect<A, E>
    ) => Effect.flatMap(IdentityProvider, body).pipe(Effect.provide(given(peers, apiKeys)))

    it.scoped("a peer with several fingerprints resolves to the same peer_id by each", () =>
      withProvider([
        peer({
          peer_id: "worker-1",
          fingerprints: [ed25519(1), sha256(1)],
          scopes: ["container:exec"],
          resources: { container: ["exec", "read"] }
        })
      ], [], (provider) =>
        Effect.gen(function*() {
          const byKey = yield* provider.resolveFingerprint(ed25519(1))
          const byCert = yield* provider.resolveFingerprint(sha256(1))
          expect(Option.getOrThrow(byKey)).toEqual({
            id: "worker-1",
            scopes: ["container:exec"],
            resources: { container: ["exec", "read"] }
          })
          expect(Option.getOrThrow(byCert)).toEqual(Option.getOrThrow(byKey))
          expect(idOf(yield* provider.resolveFingerprint(ed25519(2)))).toBeUndefined()
        })))

    it.scoped("the first enabled peer listing a fingerprint wins; disabled peers are skipped", () =>
      withProvider([
        peer({ peer_id: "off", fingerprints: [ed25519(1)], enabled: false }),
        peer({ peer_id: "first", fingerprints: [ed25519(1), ed25519(2)] }),
        peer({ peer_id: "second", fingerprints: [ed25519(2), ed25519(3)] })
      ], [], (provider) =>
        Effect.gen(function*() {
          expect(idOf(yield* provider.resolveFingerprint(ed25519(1)))).toBe("first")
          expect(idOf(yield* provider.resolveFingerprint(ed25519(2)))).toBe("first")
          expect(idOf(yield* provider.resolveFingerprint(ed25519(3)))).toBe("second")
        })))

    it.scoped("a disabled peer resolves to nothing, by fingerprint or by token", () =>
      withProvider([
        peer({
          peer_id: "off",
          fingerprints: [ed25519(7)],
          auth_token_hash: Token.hash(token("peer-secret")),
          enabled: false
        })
      ], [], (provider) =>
        Effect.gen(function*() {
          expect(idOf(yield* provider.resolveFingerprint(ed25519(7)))).toBeUndefined()
          expect(idOf(yield* provider.resolveToken(token("peer-secret")))).toBeUndefined()
        })))

    it.scoped("a peer's bearer token resolves to the peer, whatever its format", () =>
      withProvider([
        peer({ peer_id: "a", auth_token_hash: Token.hash(token("not-an-alk-token")), scopes: ["s"] }),
        peer({ peer_id: "b", auth_token_hash: Token.hash(token("alk_bbbbpeer-token-b")) })
      ], [], (provider) =>
        Effect.gen(function*() {
          expect(Option.getOrThrow(yield* provider.resolveToken(token("not-an-alk-token")))).toEqual({
            id: "a",
            scopes: ["s"],
            resources: {}
          })
          expect(idOf(yield* provider.resolveToken(token("alk_bbbbpeer-token-b")))).toBe("b")
          expect(idOf(yield* provider.resolveToken(token("not-an-alk-tokeN")))).toBeUndefined()
        })))

    it.scoped("peer tokens are checked before API keys", () => {
      const raw = "alk_dualXXXXXXXXXXXXXXXXXXXXXXXX"
      return withProvider(
        [peer({ peer_id: "the-peer", auth_token_hash: Token.hash(token(raw)) })],
        [apiKey({ prefix: "alk_dual", hash: Token.hash(token(raw)) })],
        (provider) => Effect.map(provider.resolveToken(token(raw)), (id) => expect(idOf(id)).toBe("the-peer"))
      )
    })

    it.scoped("an API key resolves by prefix and hash to {id: prefix, scopes, no resources}", () =>
      Effect.gen(function*() {
        const generated = yield* Token.generate
        const other = yield* Token.generate
        yield* withProvider([], [
          apiKey({ prefix: other.prefix, hash: other.hash, scopes: ["other"] }),
          apiKey({ prefix: generated.prefix, hash: generated.hash, scopes: ["read", "write"], description: "ci" })
        ], (provider) =>
          Effect.gen(function*() {
            expect(Option.getOrThrow(yield* provider.resolveToken(generated.token))).toEqual({
              id: generated.prefix,
              scopes: ["read", "write"],
              resources: {}
            })
            expect(idOf(yield* provider.resolveToken(other.token))).toBe(other.prefix)
          }))
      }))

    it.scoped("an API-key token with the right prefix but a wrong secret resolves to nothing", () =>
      Effect.gen(function*() {
        const { hash, prefix, token: good } = yield* Token.generate
        const raw = Redacted.value(good)
        const flipped = raw.slice(0, -1) + (raw.endsWith("A") ? "B" : "A")
        yield* withProvider([], [apiKey({ prefix, hash })], (provider) =>
          Effect.gen(function*() {
            expect(idOf(yield* provider.resolveToken(good))).toBe(prefix)
            expect(idOf(yield* provider.resolveToken(token(flipped)))).toBeUndefined()
            expect(idOf(yield* provider.resolveToken(token(raw + "x")))).toBeUndefined()
          }))
      }))

    it.scoped("a token not starting with alk_ never matches an API key, even with a matching hash", () => {
      const raw = "ALK_abcdEFGHIJKLMNOPQRSTUVWXYZ012345"
      return withProvider([], [apiKey({ prefix: "alk_abcd", hash: Token.hash(token(raw)) })], (provider) =>
        Effect.gen(function*() {
          expect(idOf(yield* provider.resolveToken(token(raw)))).toBeUndefined()
          for (const short of ["", "alk_", "alk_abcd"]) {
            expect(idOf(yield* provider.resolveToken(token(short)))).toBeUndefined()
          }
        }))
    })

    it.scoped("an API key is rejected from its expires_at on (TestClock)", () =>
      Effect.gen(function*() {
        const { hash, prefix, token: key } = yield* Token.generate
        const forever = yield* Token.generate
        const expiresAt = DateTime.unsafeMake(1_000_000)
        yield* withProvider([], [
          apiKey({ prefix, hash, expires_at: DateTime.formatIso(expiresAt) }),
          apiKey({ prefix: forever.prefix, hash: forever.hash })
        ], (provider) =>
          Effect.gen(function*() {
            yield* TestClock.setTime(999_999)
            expect(idOf(yield* provider.resolveToken(key))).toBe(prefix)
            yield* TestClock.setTime(1_000_000)
            expect(idOf(yield* provider.resolveToken(key))).toBeUndefined()
            yield* TestClock.adjust("1000 days")
            expect(idOf(yield* provider.resolveToken(key))).toBeUndefined()
            expect(idOf(yield* provider.resolveToken(forever.token))).toBe(forever.prefix)
          }))
      }))
  })
