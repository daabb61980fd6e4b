import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer, Option, Redacted, Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as ConfigFile from "../../src/layers/ConfigFile.js"
import * as IdentityProvider from "../../src/services/IdentityProvider.js"
import * as NodeConfig from "../../src/services/NodeConfig.js"
import * as RateLimit from "../../src/services/RateLimit.js"
import * as Token from "../../src/services/Token.js"
import { idOf, peer, tempDir } from "../shared/identity.js"

const peerToken = Redacted.make("the-peer-token")
const entries = IdentityProvider.layerEntries([peer({ peer_id: "p", auth_token_hash: Token.hash(peerToken) })])

const limiter = (config: Parameters<typeof NodeConfig.layerStatic>[0] = {}) =>
  RateLimit.layer.pipe(Layer.provide(Layer.merge(NodeConfig.layerStatic(config), entries)))

const bad = (n: number) => Redacted.make(`wrong-${n}`)

describe("RateLimit", () => {
  it.effect("connections per IP: the permit is held for the scope, over the limit is refused", () =>
    Effect.gen(function*() {
      const limits = yield* RateLimit.RateLimiter
      const scopes = yield* Effect.forEach([1, 2], () => Scope.make())
      for (const scope of scopes) yield* Scope.extend(limits.acquireConnection("10.0.0.1"), scope)
      const refused = yield* Effect.flip(Effect.scoped(limits.acquireConnection("10.0.0.1")))
      expect(refused).toBeInstanceOf(RateLimit.ConnectionLimitExceeded)
      expect(refused.message).toBe("too many connections from 10.0.0.1 (limit 2)")
      // Another IP is unaffected; the same IPv4 seen through a dual-stack socket counts as the same address.
      yield* Effect.scoped(limits.acquireConnection("10.0.0.2"))
      expect((yield* Effect.flip(Effect.scoped(limits.acquireConnection("::ffff:10.0.0.1"))))._tag).toBe(
        "ConnectionLimitExceeded"
      )
      // Closing a connection's scope frees its permit.
      yield* Scope.close(scopes[0]!, Exit.void)
      expect(yield* limits.connections("10.0.0.1")).toBe(1)
      yield* Effect.scoped(limits.acquireConnection("10.0.0.1"))
      yield* Scope.close(scopes[1]!, Exit.void)
      expect(yield* limits.connections("10.0.0.1")).toBe(0)
    }).pipe(Effect.provide(limiter({ rate_limits: { max_connections_per_ip: 2 } }))))

  it.effect("the default is 100 connections per IP", () =>
    Effect.gen(function*() {
      const limits = yield* RateLimit.RateLimiter
      const scope = yield* Scope.make()
      yield* Effect.forEach(Array.from({ length: 100 }), () => Scope.extend(limits.acquireConnection("h"), scope))
      expect((yield* Effect.flip(Effect.scoped(limits.acquireConnection("h")))).limit).toBe(100)
      yield* Scope.close(scope, Exit.void)
      expect(yield* limits.connections("h")).toBe(0)
    }).pipe(Effect.provide(limiter())))

  it.effect("the 5th failed token resolution on a connection fails AuthAttemptsExceeded, as does every later one", () =>
    Effect.gen(function*() {
      const limits = yield* RateLimit.RateLimiter
      const guard = yield* limits.authGuard
      for (let i = 1; i <= 4; i++) expect(yield* guard.resolveToken(bad(i))).toEqual(Option.none())
      // A valid token still resolves, and does not reset the count.
      expect(idOf(yield* guard.resolveToken(peerToken))).toBe("p")
      expect(yield* guard.failures).toBe(4)
      const fifth = yield* Effect.flip(guard.resolveToken(bad(5)))
      expect(fifth).toBeInstanceOf(RateLimit.AuthAttemptsExceeded)
      expect(fifth.message).toContain("limit 5")
      expect((yield* Effect.flip(guard.resolveToken(peerToken)))._tag).toBe("AuthAttemptsExceeded")
      // Counters are per connection.
      const other = yield* limits.authGuard
      expect(idOf(yield* other.resolveToken(peerToken))).toBe("p")
      expect(yield* other.failures).toBe(0)
    }).pipe(Effect.provide(limiter())))

  it.effect("concurrent attempts on one connection cannot overshoot the limit", () =>
    Effect.gen(function*() {
      const guard = yield* Effect.flatMap(RateLimit.RateLimiter, (l) => l.authGuard)
      const results = yield* Effect.forEach(
        Array.from({ length: 10 }, (_, i) => i),
        (i) => Effect.either(guard.resolveToken(bad(i))),
        { concurrency: "unbounded" }
      )
      expect(yield* guard.failures).toBe(3)
      expect(results.filter((r) => r._tag === "Right")).toHaveLength(2)
    }).pipe(
      Effect.provide(
        RateLimit.layer.pipe(Layer.provide(Layer.merge(
          NodeConfig.layerStatic({ rate_limits: { max_auth_attempts: 3 } }),
          // A provider that answers asynchronously (as a remote backend would), so the attempts interleave.
          Layer.succeed(IdentityProvider.IdentityProvider, {
            resolveFingerprint: () => Effect.succeedNone,
            resolveToken: () => Effect.as(Effect.yieldNow(), Option.none())
          })
        )))
      )
    ))

  it.scoped("limits follow the live config: a reload applies to the next connection and attempt", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const file = path.join(dir, "alknet.json")
      const write = (rate_limits: object) => {
        fs.writeFileSync(`${file}.tmp`, JSON.stringify({ rate_limits }))
        fs.renameSync(`${file}.tmp`, file)
      }
      write({ max_connections_per_ip: 1, max_auth_attempts: 2 })
      const context = yield* Layer.build(
        RateLimit.layer.pipe(Layer.provideMerge(ConfigFile.layer(file, { debounce: "10 millis" })))
      )
      const limits = yield* Effect.provide(RateLimit.RateLimiter, context)
      const handle = yield* Effect.provide(ConfigFile.ConfigFile, context)
      yield* limits.acquireConnection("1.2.3.4")
      expect((yield* Effect.flip(Effect.scoped(limits.acquireConnection("1.2.3.4"))))._tag).toBe(
        "ConnectionLimitExceeded"
      )
      const guard = yield* limits.authGuard
      expect(yield* guard.resolveToken(bad(1))).toEqual(Option.none())
      write({ max_connections_per_ip: 2, max_auth_attempts: 4 })
      yield* handle.reload
      yield* Effect.scoped(limits.acquireConnection("1.2.3.4"))
      expect(yield* guard.resolveToken(bad(2))).toEqual(Option.none())
      expect(yield* guard.resolveToken(bad(3))).toEqual(Option.none())
      expect((yield* Effect.flip(guard.resolveToken(bad(4))))._tag).toBe("AuthAttemptsExceeded")
    }))
})
