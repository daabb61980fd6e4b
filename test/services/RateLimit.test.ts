import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer, Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as ConfigFile from "../../src/layers/ConfigFile.js"
import * as NodeConfig from "../../src/services/NodeConfig.js"
import * as RateLimit from "../../src/services/RateLimit.js"
import { tempDir } from "../shared/identity.js"

const limiter = (config: Parameters<typeof NodeConfig.layerStatic>[0] = {}) =>
  RateLimit.layer.pipe(Layer.provide(NodeConfig.layerStatic(config)))

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

  it.scoped("the limit follows the live config: a reload applies to the next connection", () =>
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
      write({ max_connections_per_ip: 2, max_auth_attempts: 4 })
      yield* handle.reload
      yield* Effect.scoped(limits.acquireConnection("1.2.3.4"))
      expect(yield* limits.connections("1.2.3.4")).toBe(1)
    }))
})
