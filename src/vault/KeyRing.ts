/**
 * The vault's secret state, synchronous and clock-free: the BIP39 seed and a TTL + LRU cache of derived keys.
 * The Vault service (src/services/Vault.ts) wraps it in Effects, reads the time from Effect's Clock, and sweeps
 * expired entries from a background fiber.
 *
 * Every buffer that leaves the ring is a copy the caller owns. The ring's own buffers — the seed and each cached
 * private key — are overwritten with zeros on `lock`, on expiry and on LRU eviction.
 */
import { HDKey } from "@scure/bip32"
import { Either } from "effect"
import * as VaultError from "../errors/VaultError.js"
import { HARDENED_OFFSET, type Parsed } from "../schema/HdPath.js"
import * as Slip10 from "./Slip10.js"

export type Curve = "Ed25519" | "Secp256k1"

export interface KeyPair {
  /** Ed25519: the 32-byte RFC 8032 seed. secp256k1: the 32-byte scalar. */
  readonly privateKey: Uint8Array
  /** Ed25519: 32 bytes. secp256k1: 33 bytes, compressed. */
  readonly publicKey: Uint8Array
}

export interface CacheOptions {
  /** Most keys kept; 0 turns the cache off. */
  readonly size: number
  /** How long a derived key stays cached after its derivation; 0 turns the cache off. */
  readonly ttlMillis: number
}

interface Entry {
  readonly pair: KeyPair
  readonly expiresAt: number
}

export interface KeyRing {
  readonly isUnlocked: () => boolean
  /** Take ownership of `seed` (the ring wipes it on `lock`). */
  readonly unlock: (seed: Uint8Array) => void
  /** Wipe the seed and every cached key. No-op when locked. */
  readonly lock: () => void
  /** The key pair at `path` (a copy the caller owns), from the cache when fresh. `now` is in milliseconds. */
  readonly derive: (curve: Curve, path: Parsed, now: number) => Either.Either<KeyPair, VaultError.VaultError>
  /**
   * Lend the key pair at `path` to `f` without copying it: `f` must not keep it (it is wiped on eviction, or at
   * once when the cache is off). For hot paths such as encryption.
   */
  readonly use: <A>(curve: Curve, path: Parsed, now: number, f: (pair: KeyPair) => A) => Either.Either<A, VaultError.VaultError>
  /** Wipe and drop the entries that expired by `now`. */
  readonly sweep: (now: number) => void
  /** The live secret buffers, for tests that prove they are wiped. Never hand these out. */
  readonly unsafeInternals: () => { readonly seed: Uint8Array | undefined; readonly cached: ReadonlyArray<KeyPair> }
}

export const make = (cache: CacheOptions): KeyRing => {
  let seed: Uint8Array | undefined
  // A Map iterates in insertion order; a hit re-inserts its entry, so the first entry is the least recently used.
  const entries = new Map<string, Entry>()
  const caching = cache.size > 0 && cache.ttlMillis > 0

  const evict = (id: string, entry: Entry) => {
    entry.pair.privateKey.fill(0)
    entries.delete(id)
  }

  const sweep = (now: number) => {
    for (const [id, entry] of entries) if (now >= entry.expiresAt) evict(id, entry)
  }

  const lookup = (id: string, now: number): KeyPair | undefined => {
    const entry = entries.get(id)
    if (entry === undefined) return undefined
    if (now >= entry.expiresAt) {
      evict(id, entry)
      return undefined
    }
    entries.delete(id)
    entries.set(id, entry)
    return entry.pair
  }

  const store = (id: string, pair: KeyPair, now: number) => {
    sweep(now)
    while (entries.size >= cache.size) {
      const [oldest, entry] = entries.entries().next().value!
      evict(oldest, entry)
    }
    entries.set(id, { pair, expiresAt: now + cache.ttlMillis })
  }

  const copy = (pair: KeyPair): KeyPair => ({
    privateKey: new Uint8Array(pair.privateKey),
    publicKey: new Uint8Array(pair.publicKey)
  })

  const use = <A>(curve: Curve, path: Parsed, now: number, f: (pair: KeyPair) => A) => {
    if (seed === undefined) return Either.left(VaultError.locked())
    if (!caching) {
      const pair = deriveFresh(seed, curve, path)
      try {
        return Either.right(f(pair))
      } finally {
        pair.privateKey.fill(0)
      }
    }
    const id = `${curve}:${path.path}`
    let pair = lookup(id, now)
    if (pair === undefined) {
      pair = deriveFresh(seed, curve, path)
      store(id, pair, now)
    }
    return Either.right(f(pair))
  }

  return {
    isUnlocked: () => seed !== undefined,
    unlock: (next) => {
      seed = next
    },
    lock: () => {
      for (const [id, entry] of entries) evict(id, entry)
      seed?.fill(0)
      seed = undefined
    },
    derive: (curve, path, now) => use(curve, path, now, copy),
    use,
    sweep,
    unsafeInternals: () => ({ seed, cached: Array.from(entries.values(), (entry) => entry.pair) })
  }
}

const deriveFresh = (seed: Uint8Array, curve: Curve, path: Parsed): KeyPair =>
  curve === "Ed25519" ? deriveEd25519(seed, path) : deriveSecp256k1(seed, path)

const deriveEd25519 = (seed: Uint8Array, path: Parsed): KeyPair => {
  const node = Slip10.derive(seed, path.segments.map((s) => s.index))
  const privateKey = new Uint8Array(node.key)
  Slip10.wipe(node)
  return { privateKey, publicKey: Slip10.publicKey(privateKey) }
}

const deriveSecp256k1 = (seed: Uint8Array, path: Parsed): KeyPair => {
  let node = HDKey.fromMasterSeed(seed)
  for (const segment of path.segments) {
    const next = node.deriveChild(segment.hardened ? segment.index + HARDENED_OFFSET : segment.index)
    node.wipePrivateData()
    node = next
  }
  const pair = { privateKey: new Uint8Array(node.privateKey!), publicKey: new Uint8Array(node.publicKey!) }
  node.wipePrivateData()
  return pair
}

// The ring behind each Vault service, so tests can hold the live buffers and prove they are wiped.
const rings = new WeakMap<object, KeyRing>()

/** Record that `service` is backed by `ring`; returns `service`. */
export const attach = <S extends object>(service: S, ring: KeyRing): S => {
  rings.set(service, ring)
  return service
}

/** The ring behind a service built by `Vault.make`. */
export const behind = (service: object): KeyRing | undefined => rings.get(service)
