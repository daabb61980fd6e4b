import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Redacted, TestClock } from "effect"
import { DerivedKey, HdPath, Vault } from "../../src/index.js"
import * as KeyRing from "../../src/vault/KeyRing.js"
import { ABOUT } from "./VaultReference.js"

const zero = (bytes: Uint8Array) => bytes.every((b) => b === 0)

/** An unlocked vault and the live buffers behind it. */
const unlocked = (options?: Vault.Options) =>
  Effect.gen(function*() {
    const vault = yield* Vault.make(options)
    yield* vault.unlock(Redacted.make(ABOUT))
    return { vault, internals: KeyRing.behind(vault)!.unsafeInternals }
  })

describe("Vault derived-key cache", () => {
  it.scoped("keeps a key for 1 hour by default, then the sweeper wipes it (TestClock)", () =>
    Effect.gen(function*() {
      const { vault, internals } = yield* unlocked()
      const first = yield* vault.deriveEd25519(HdPath.nodeIdentity)
      const [entry] = internals().cached
      expect(entry).toBeDefined()

      yield* TestClock.adjust("59 minutes")
      expect(internals().cached).toEqual([entry])
      expect(zero(entry!.privateKey)).toBe(false)
      // A hit serves the same entry rather than deriving again.
      yield* vault.deriveEd25519(HdPath.nodeIdentity)
      expect(internals().cached[0]).toBe(entry)

      // No lookup needed: the background sweep wipes the entry once its hour is up.
      yield* TestClock.adjust("1 minute")
      expect(internals().cached).toEqual([])
      expect(zero(entry!.privateKey)).toBe(true)

      // Deriving again gives the same key, freshly cached.
      const again = yield* vault.deriveEd25519(HdPath.nodeIdentity)
      expect(Redacted.value(again.privateKey)).toEqual(Redacted.value(first.privateKey))
      expect(internals().cached).toHaveLength(1)
      expect(internals().cached[0]).not.toBe(entry)
    }))

  it.scoped("holds at most 64 keys by default, wiping the least recently used", () =>
    Effect.gen(function*() {
      const { vault, internals } = yield* unlocked()
      for (let n = 1; n <= 64; n++) yield* vault.deriveEd25519(HdPath.device(n))
      const oldest = internals().cached[0]!
      yield* vault.deriveEd25519(HdPath.device(65))
      expect(internals().cached).toHaveLength(64)
      expect(internals().cached).not.toContain(oldest)
      expect(zero(oldest.privateKey)).toBe(true)
    }))

  it.scoped("takes its size and TTL from layerConfig", () =>
    Effect.gen(function*() {
      const vault = yield* Vault.Vault
      const internals = KeyRing.behind(vault)!.unsafeInternals
      yield* vault.unlock(Redacted.make(ABOUT))
      for (const path of [HdPath.nodeIdentity, HdPath.sshHost, HdPath.encryptionKey(2)]) yield* vault.deriveEd25519(path)
      expect(internals().cached).toHaveLength(2)
      const kept = internals().cached
      yield* TestClock.adjust("10 minutes")
      expect(internals().cached).toEqual([])
      for (const pair of kept) expect(zero(pair.privateKey)).toBe(true)
    }).pipe(Effect.provide(Vault.layerConfig({ cacheSize: 2, cacheTtl: "10 minutes" }))))

  it.scoped("refuses a cache size that is not a non-negative integer (a bug in the caller)", () =>
    Effect.gen(function*() {
      for (const cacheSize of [-1, 1.5]) {
        const exit = yield* Effect.exit(Vault.make({ cacheSize }))
        expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
        if (Exit.isFailure(exit)) expect(Cause.pretty(exit.cause)).toContain(`cacheSize must be a non-negative integer, got ${cacheSize}`)
      }
    }))

  it.scoped("caches nothing when turned off, and derives the same keys", () =>
    Effect.gen(function*() {
      const off = yield* unlocked({ cacheSize: 0 })
      const on = yield* unlocked()
      const a = yield* off.vault.deriveEd25519(HdPath.sshHost)
      const b = yield* on.vault.deriveEd25519(HdPath.sshHost)
      expect(off.internals().cached).toEqual([])
      expect(Redacted.value(a.privateKey)).toEqual(Redacted.value(b.privateKey))
      const blob = yield* off.vault.encrypt("x")
      expect(Redacted.value(yield* on.vault.decrypt(blob))).toBe("x")
      expect(off.internals().cached).toEqual([])
    }))
})

describe("Vault zeroization", () => {
  it.scoped("lock overwrites the seed and every cached key with zeros", () =>
    Effect.gen(function*() {
      const { vault, internals } = yield* unlocked()
      yield* vault.deriveEd25519(HdPath.nodeIdentity)
      yield* vault.deriveSecp256k1("m/44'/60'/0'/0/0")
      yield* vault.encrypt("caches the v2 key too")
      const { seed, cached } = internals()
      expect(cached).toHaveLength(3)
      expect(zero(seed!)).toBe(false)
      for (const pair of cached) expect(zero(pair.privateKey)).toBe(false)

      yield* vault.lock

      expect(zero(seed!)).toBe(true)
      for (const pair of cached) expect(zero(pair.privateKey)).toBe(true)
      expect(internals()).toEqual({ seed: undefined, cached: [] })
    }))

  it.effect("closing the vault's scope wipes it as lock does", () =>
    Effect.gen(function*() {
      const { seed, cached } = yield* Effect.scoped(
        Effect.gen(function*() {
          const { vault, internals } = yield* unlocked()
          yield* vault.deriveEd25519(HdPath.nodeIdentity)
          return internals()
        })
      )
      expect(zero(seed!)).toBe(true)
      expect(zero(cached[0]!.privateKey)).toBe(true)
    }))

  it.scoped("keys already handed out are the caller's copies: lock leaves them, DerivedKey.wipe zeroes them", () =>
    Effect.gen(function*() {
      const { vault } = yield* unlocked()
      const key = yield* vault.deriveEd25519(HdPath.nodeIdentity)
      const bytes = Redacted.value(key.privateKey)
      yield* vault.lock
      expect(zero(bytes)).toBe(false)
      DerivedKey.wipe(key)
      expect(zero(bytes)).toBe(true)
      expect(() => Redacted.value(key.privateKey)).toThrow()
    }))
})
