import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer, Logger, Scope, TestClock } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as ConfigFile from "../../src/layers/ConfigFile.js"
import * as NodeConfig from "../../src/services/NodeConfig.js"
import * as RateLimit from "../../src/services/RateLimit.js"
import { tempDir } from "../shared/identity.js"

const limiter = (config: Parameters<typeof NodeConfig.layerStatic>[0] = {}) =>
  RateLimit.layer.pipe(Layer.provide(NodeConfig.layerStatic(config)))

/** Warnings logged while `effect` runs. */
const warnings = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const lines: Array<string> = []
    const logger = Logger.make(({ logLevel, message }) => {
      if (logLevel._tag === "Warning") lines.push(Array.isArray(message) ? message.join(" ") : String(message))
    })
    const result = yield* effect.pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
    return [result, lines] as const
  })

const blocked = (limits: RateLimit.Service, ip: string) =>
  Effect.match(limits.checkAddress(ip), { onFailure: (e) => e, onSuccess: () => undefined })

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

  it.effect("failed authentications per address: the limit within the window starts a cooldown, logged once", () =>
    Effect.gen(function*() {
      const limits = yield* RateLimit.RateLimiter
      const [, logged] = yield* warnings(Effect.gen(function*() {
        for (let i = 0; i < 2; i++) {
          yield* limits.recordAuthFailure("10.0.0.1")
          yield* TestClock.adjust("1 second")
        }
        expect(yield* blocked(limits, "10.0.0.1")).toBeUndefined()
        yield* limits.recordAuthFailure("10.0.0.1") // the third within 10 s
        const refused = yield* blocked(limits, "10.0.0.1")
        expect(refused).toBeInstanceOf(RateLimit.AddressBlocked)
        expect(refused?.message).toBe("too many failed authentications from 10.0.0.1: refused for 30 s")
        // The same IPv4 through a dual-stack socket is the same address; another address is unaffected.
        expect((yield* blocked(limits, "::ffff:10.0.0.1"))?._tag).toBe("AddressBlocked")
        expect(yield* blocked(limits, "10.0.0.2")).toBeUndefined()
        // Failures during the cooldown neither extend it nor log again.
        yield* limits.recordAuthFailure("10.0.0.1")
        yield* limits.recordAuthFailure("10.0.0.1")
        yield* limits.recordAuthFailure("10.0.0.1")
        yield* TestClock.adjust("29 seconds")
        expect((yield* blocked(limits, "10.0.0.1"))?.retryAfterMs).toBe(1000)
        yield* TestClock.adjust("1 second")
        expect(yield* blocked(limits, "10.0.0.1")).toBeUndefined()
        // After the cooldown the count starts again from zero: a second block is logged again.
        yield* limits.recordAuthFailure("10.0.0.1")
        yield* limits.recordAuthFailure("10.0.0.1")
        expect(yield* blocked(limits, "10.0.0.1")).toBeUndefined()
        yield* limits.recordAuthFailure("10.0.0.1")
        expect((yield* blocked(limits, "10.0.0.1"))?._tag).toBe("AddressBlocked")
      }))
      expect(logged).toEqual([
        "refusing 10.0.0.1 for 30 s: 3 failed authentications within 10 s",
        "refusing 10.0.0.1 for 30 s: 3 failed authentications within 10 s"
      ])
    }).pipe(Effect.provide(limiter({
      rate_limits: { max_auth_failures_per_ip: 3, auth_failure_window_ms: 10_000, auth_block_ms: 30_000 }
    }))))

  it.effect("the window slides: failures spread wider than it never block, and old ones are forgotten", () =>
    Effect.gen(function*() {
      const limits = yield* RateLimit.RateLimiter
      // One failure every 6 s: never three within 10 s.
      for (let i = 0; i < 20; i++) {
        yield* limits.recordAuthFailure("192.0.2.7")
        expect(yield* blocked(limits, "192.0.2.7")).toBeUndefined()
        yield* TestClock.adjust("6 seconds")
      }
      // Two at 8 and 9 s past a multiple of the window and one 11 s past it: three within 3 s. A sliding window blocks;
      // a fixed one (restarting at every multiple of 10 s) would count 2, then 1, and let them through.
      yield* TestClock.adjust("28 seconds") // t = 148 s
      yield* limits.recordAuthFailure("192.0.2.7")
      yield* TestClock.adjust("1 second")
      yield* limits.recordAuthFailure("192.0.2.7")
      yield* TestClock.adjust("2 seconds")
      expect(yield* blocked(limits, "192.0.2.7")).toBeUndefined()
      yield* limits.recordAuthFailure("192.0.2.7")
      expect((yield* blocked(limits, "192.0.2.7"))?._tag).toBe("AddressBlocked")
      // Nothing is remembered for an address whose failures left the window and whose cooldown ended.
      expect(yield* limits.trackedAddresses).toBe(1)
      yield* TestClock.adjust("30 seconds")
      expect(yield* limits.trackedAddresses).toBe(0)
    }).pipe(Effect.provide(limiter({
      rate_limits: { max_auth_failures_per_ip: 3, auth_failure_window_ms: 10_000, auth_block_ms: 30_000 }
    }))))

  it.effect("defaults: 10 failures within 60 s block for 5 minutes; an IPv6 address counts with its /64", () =>
    Effect.gen(function*() {
      const limits = yield* RateLimit.RateLimiter
      // Ten different hosts of one /64, each failing once.
      for (let i = 1; i <= 9; i++) yield* limits.recordAuthFailure(`2001:db8:0:1::${i}`)
      expect(yield* blocked(limits, "2001:db8:0:1::1")).toBeUndefined()
      yield* limits.recordAuthFailure("2001:0db8:0000:0001:ffff:ffff:ffff:ffff")
      const refused = yield* blocked(limits, "2001:db8:0:1:abcd::1")
      expect(refused?.address).toBe("2001:db8:0:1::/64")
      expect(refused?.retryAfterMs).toBe(300_000)
      expect(yield* blocked(limits, "2001:db8:0:2::1")).toBeUndefined()
      yield* TestClock.adjust("5 minutes")
      expect(yield* blocked(limits, "2001:db8:0:1::1")).toBeUndefined()
    }).pipe(Effect.provide(limiter())))

  it("addressKey: IPv4 as is, IPv6 as its /64, anything else as is", () => {
    expect(RateLimit.addressKey("127.0.0.1")).toBe("127.0.0.1")
    expect(RateLimit.addressKey("::ffff:127.0.0.1")).toBe("127.0.0.1")
    expect(RateLimit.addressKey("::1")).toBe("0:0:0:0::/64")
    expect(RateLimit.addressKey("fe80::1%eth0")).toBe("fe80:0:0:0::/64")
    expect(RateLimit.addressKey("2001:db8:1:2:3:4:5:6")).toBe("2001:db8:1:2::/64")
    expect(RateLimit.addressKey("2001:db8::1.2.3.4")).toBe("2001:db8:0:0::/64")
    expect(RateLimit.addressKey("not an address")).toBe("not an address")
    expect(RateLimit.addressKey("1::2::3")).toBe("1::2::3")
  })

  it.effect("memory is bounded: past the tracked maximum the least recently failing address is forgotten", () =>
    Effect.gen(function*() {
      const limits = yield* RateLimit.RateLimiter
      yield* limits.recordAuthFailure("10.255.255.255")
      yield* limits.recordAuthFailure("10.255.255.255")
      for (let i = 0; i < RateLimit.MAX_TRACKED_ADDRESSES; i++) {
        yield* limits.recordAuthFailure(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`)
      }
      expect(yield* limits.trackedAddresses).toBe(RateLimit.MAX_TRACKED_ADDRESSES)
      // The first address was forgotten: its next failure is its first again.
      yield* limits.recordAuthFailure("10.255.255.255")
      expect(yield* blocked(limits, "10.255.255.255")).toBeUndefined()
    }).pipe(Effect.provide(limiter({ rate_limits: { max_auth_failures_per_ip: 3 } }))))

  it.scoped("the auth-failure limits follow the live config", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const file = path.join(dir, "alknet.json")
      const write = (rate_limits: object) => {
        fs.writeFileSync(`${file}.tmp`, JSON.stringify({ rate_limits }))
        fs.renameSync(`${file}.tmp`, file)
      }
      write({ max_auth_failures_per_ip: 1 })
      const context = yield* Layer.build(
        RateLimit.layer.pipe(Layer.provideMerge(ConfigFile.layer(file, { debounce: "10 millis" })))
      )
      const limits = yield* Effect.provide(RateLimit.RateLimiter, context)
      const handle = yield* Effect.provide(ConfigFile.ConfigFile, context)
      yield* limits.recordAuthFailure("1.2.3.4")
      expect((yield* blocked(limits, "1.2.3.4"))?._tag).toBe("AddressBlocked")
      write({ max_auth_failures_per_ip: 2 })
      yield* handle.reload
      yield* limits.recordAuthFailure("5.6.7.8")
      expect(yield* blocked(limits, "5.6.7.8")).toBeUndefined()
      yield* limits.recordAuthFailure("5.6.7.8")
      expect((yield* blocked(limits, "5.6.7.8"))?._tag).toBe("AddressBlocked")
    }))
})
