import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import * as HdPath from "../../src/schema/HdPath.js"
import * as KeyRing from "../../src/vault/KeyRing.js"

const zero = (bytes: Uint8Array) => bytes.every((b) => b === 0)
const path = (p: string) => Either.getOrThrow(HdPath.parse(p))
const device = (n: number) => path(HdPath.device(n))
const HOUR = 3_600_000

const unlocked = (cache: KeyRing.CacheOptions) => {
  const ring = KeyRing.make(cache)
  const seed = new Uint8Array(64).fill(0x5a)
  ring.unlock(seed)
  return { ring, seed }
}

describe("KeyRing", () => {
  it("is locked until unlocked, and derive says so", () => {
    const ring = KeyRing.make({ size: 4, ttlMillis: HOUR })
    expect(ring.isUnlocked()).toBe(false)
    const result = ring.derive("Ed25519", device(0), 0)
    expect(Either.isLeft(result) && result.left.reason).toBe("Locked")
  })

  it("lock overwrites the seed and every cached private key with zeros", () => {
    const { ring, seed } = unlocked({ size: 4, ttlMillis: HOUR })
    Either.getOrThrow(ring.derive("Ed25519", device(0), 0))
    Either.getOrThrow(ring.derive("Secp256k1", path("m/44'/60'/0'/0/0"), 0))
    const cached = ring.unsafeInternals().cached
    expect(cached).toHaveLength(2)
    expect(cached.some((pair) => zero(pair.privateKey))).toBe(false)
    expect(zero(seed)).toBe(false)

    ring.lock()

    expect(zero(seed)).toBe(true)
    for (const pair of cached) expect(zero(pair.privateKey)).toBe(true)
    expect(ring.isUnlocked()).toBe(false)
    expect(ring.unsafeInternals()).toEqual({ seed: undefined, cached: [] })
  })

  it("hands out copies: a key the caller holds survives lock, and mutating it does not touch the cache", () => {
    const { ring } = unlocked({ size: 4, ttlMillis: HOUR })
    const held = Either.getOrThrow(ring.derive("Ed25519", device(0), 0))
    const original = new Uint8Array(held.privateKey)
    held.privateKey.fill(1)
    expect(Either.getOrThrow(ring.derive("Ed25519", device(0), 0)).privateKey).toEqual(original)
    held.privateKey.set(original)
    ring.lock()
    expect(held.privateKey).toEqual(original)
  })

  it("serves a fresh entry from the cache and wipes an expired one on lookup", () => {
    const { ring } = unlocked({ size: 4, ttlMillis: HOUR })
    const first = Either.getOrThrow(ring.derive("Ed25519", device(1), 0))
    const [entry] = ring.unsafeInternals().cached
    Either.getOrThrow(ring.derive("Ed25519", device(1), HOUR - 1))
    expect(ring.unsafeInternals().cached[0]).toBe(entry)

    const again = Either.getOrThrow(ring.derive("Ed25519", device(1), HOUR))
    expect(zero(entry!.privateKey)).toBe(true)
    expect(ring.unsafeInternals().cached[0]).not.toBe(entry)
    expect(again.privateKey).toEqual(first.privateKey)
  })

  it("sweep wipes expired entries without a lookup", () => {
    const { ring } = unlocked({ size: 4, ttlMillis: HOUR })
    Either.getOrThrow(ring.derive("Ed25519", device(1), 0))
    Either.getOrThrow(ring.derive("Ed25519", device(2), 1000))
    const [early, late] = ring.unsafeInternals().cached
    ring.sweep(HOUR)
    expect(zero(early!.privateKey)).toBe(true)
    expect(zero(late!.privateKey)).toBe(false)
    expect(ring.unsafeInternals().cached).toEqual([late])
  })

  it("evicts the least recently used entry when full, and wipes it", () => {
    const { ring } = unlocked({ size: 2, ttlMillis: HOUR })
    Either.getOrThrow(ring.derive("Ed25519", device(1), 0))
    Either.getOrThrow(ring.derive("Ed25519", device(2), 0))
    const [one, two] = ring.unsafeInternals().cached
    Either.getOrThrow(ring.derive("Ed25519", device(1), 1)) // device 1 is now the most recently used
    Either.getOrThrow(ring.derive("Ed25519", device(3), 2)) // so device 2 goes
    expect(zero(two!.privateKey)).toBe(true)
    expect(zero(one!.privateKey)).toBe(false)
    expect(ring.unsafeInternals().cached).toHaveLength(2)
    expect(ring.unsafeInternals().cached[0]).toBe(one)
  })

  it("keeps nothing when the cache is off, and wipes the lent key after use", () => {
    const { ring } = unlocked({ size: 0, ttlMillis: HOUR })
    let lent: Uint8Array | undefined
    const publicKey = Either.getOrThrow(ring.use("Ed25519", device(0), 0, (pair) => {
      lent = pair.privateKey
      expect(zero(pair.privateKey)).toBe(false)
      return pair.publicKey
    }))
    expect(publicKey).toHaveLength(32)
    expect(zero(lent!)).toBe(true)
    expect(ring.unsafeInternals().cached).toEqual([])
  })

  it("derives the same keys with the cache on and off", () => {
    const on = unlocked({ size: 8, ttlMillis: HOUR }).ring
    const off = unlocked({ size: 0, ttlMillis: 0 }).ring
    for (const p of [HdPath.nodeIdentity, HdPath.sshHost, HdPath.encryptionKey(2)]) {
      expect(Either.getOrThrow(on.derive("Ed25519", path(p), 0))).toEqual(
        Either.getOrThrow(off.derive("Ed25519", path(p), 0))
      )
    }
  })
})
