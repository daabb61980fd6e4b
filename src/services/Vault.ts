/**
 * The vault (SPEC §12): one BIP39 mnemonic → HD-derived keys → AES-256-GCM encryption of stored credentials.
 *
 * ```ts
 * import { Effect, Redacted } from "effect"
 * import { HdPath, Vault } from "alknet"
 *
 * const program = Effect.gen(function*() {
 *   const vault = yield* Vault.Vault
 *   yield* vault.unlock(Redacted.make("abandon abandon … about"))
 *   const identity = yield* vault.deriveEd25519(HdPath.nodeIdentity)  // TLS raw key: identity.privateKey
 *   const blob = yield* vault.encrypt("api-token")                     // EncryptedData, key_version 2
 *   const token = yield* vault.decrypt(blob)                           // Redacted<string>
 * }).pipe(Effect.provide(Vault.layer))
 * ```
 *
 * The vault is in-process only: nothing here is ever registered on the call protocol.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import { Clock, Context, Duration, Effect, Either, identity, Layer, Redacted, type Scope } from "effect"
import * as VaultError from "../errors/VaultError.js"
import { DerivedKey } from "../schema/DerivedKey.js"
import type { EncryptedData } from "../schema/EncryptedData.js"
import * as HdPath from "../schema/HdPath.js"
import * as Aead from "../vault/Aead.js"
import * as KeyRing from "../vault/KeyRing.js"
import * as Mnemonic from "../vault/Mnemonic.js"

/** The number of words of a BIP39 mnemonic. */
export type WordCount = Mnemonic.WordCount

/** The key version `encrypt` uses by default (path `m/74'/2'/0'/0'`). */
export const CURRENT_KEY_VERSION = 2

export class Vault extends Context.Tag("alknet/Vault")<Vault, {
  /**
   * Unlock with a BIP39 English mnemonic and optional passphrase (seed = PBKDF2-HMAC-SHA512, 2048 rounds).
   * Surrounding and repeated whitespace is ignored. Fails with `InvalidMnemonic` (its `problem` says whether
   * the word count, a word — by position — or the checksum is wrong) or `AlreadyUnlocked`.
   */
  readonly unlock: (
    mnemonic: Redacted.Redacted<string>,
    passphrase?: Redacted.Redacted<string>
  ) => Effect.Effect<void, VaultError.VaultError>
  /**
   * Generate a mnemonic of `wordCount` words, unlock with it, and return it — the only time it is shown.
   * Fails with `AlreadyUnlocked`, or `InvalidMnemonic` (`WordCount`) for a count BIP39 does not define.
   */
  readonly unlockNew: (
    wordCount: WordCount,
    passphrase?: Redacted.Redacted<string>
  ) => Effect.Effect<Redacted.Redacted<string>, VaultError.VaultError>
  /** Overwrite the seed and every cached key with zeros and forget them. A no-op when already locked. */
  readonly lock: Effect.Effect<void>
  readonly isUnlocked: Effect.Effect<boolean>
  /**
   * The SLIP-0010 Ed25519 key at `path` (hardened segments only; `'` or `h`). Its `privateKey` is the 32-byte
   * RFC 8032 seed: a signing key, and the node's TLS raw key at `HdPath.nodeIdentity`. Fails with `Locked` or
   * `InvalidPath` (naming the segment).
   */
  readonly deriveEd25519: (path: string) => Effect.Effect<DerivedKey, VaultError.VaultError>
  /** The BIP32 secp256k1 key at `path`, e.g. Ethereum's `m/44'/60'/0'/0/0`; `publicKey` is compressed. */
  readonly deriveSecp256k1: (path: string) => Effect.Effect<DerivedKey, VaultError.VaultError>
  /**
   * Encrypt `plaintext` with the key of `keyVersion` (default 2) into an `EncryptedData` blob: AES-256-GCM,
   * fresh random IV. Fails with `Locked`, `LegacyKeyVersion` (1) or `InvalidKeyVersion`.
   */
  readonly encrypt: (
    plaintext: string | Redacted.Redacted<string>,
    keyVersion?: number
  ) => Effect.Effect<EncryptedData, VaultError.VaultError>
  /**
   * Decrypt a blob with the key of its `key_version`. The plaintext is a credential, so it comes back
   * `Redacted`. Fails with `Locked`, `LegacyKeyVersion`, `InvalidKeyVersion`, `MalformedData`, or
   * `Authentication` when the blob was altered or made under another mnemonic.
   */
  readonly decrypt: (blob: EncryptedData) => Effect.Effect<Redacted.Redacted<string>, VaultError.VaultError>
  /** Decrypt `blob` and encrypt it again under `toVersion`. Old versions stay derivable; nothing rotates by itself. */
  readonly rotate: (blob: EncryptedData, toVersion: number) => Effect.Effect<EncryptedData, VaultError.VaultError>
}>() {}

export interface Options {
  /** How long a derived key stays cached after its derivation. Default 1 hour; 0 turns the cache off. */
  readonly cacheTtl?: Duration.DurationInput
  /** Most derived keys cached (least recently used goes first). Default 64; 0 turns the cache off. */
  readonly cacheSize?: number
}

export const DEFAULT_CACHE_TTL = Duration.hours(1)
export const DEFAULT_CACHE_SIZE = 64

/**
 * Build a vault (locked). Closing the scope locks it. With the cache on, a background fiber wipes expired keys
 * at least once a minute; lookups never return an expired key.
 */
export const make = (options: Options = {}): Effect.Effect<Vault["Type"], never, Scope.Scope> =>
  Effect.gen(function*() {
    const ttl = Duration.decode(options.cacheTtl ?? DEFAULT_CACHE_TTL)
    const size = options.cacheSize ?? DEFAULT_CACHE_SIZE
    if (!Number.isInteger(size) || size < 0) {
      return yield* Effect.dieMessage(`Vault cacheSize must be a non-negative integer, got ${size}`)
    }
    const ring = KeyRing.make({ size, ttlMillis: Duration.toMillis(ttl) })
    yield* Effect.addFinalizer(() => Effect.sync(ring.lock))
    if (size > 0 && Duration.greaterThan(ttl, Duration.zero)) {
      const every = Duration.clamp(ttl, { minimum: Duration.seconds(1), maximum: Duration.minutes(1) })
      yield* Clock.currentTimeMillis.pipe(
        Effect.map(ring.sweep),
        Effect.delay(every),
        Effect.forever,
        Effect.forkScoped
      )
    }

    const keyAt = (curve: KeyRing.Curve, path: string) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        if (!ring.isUnlocked()) return Either.left(VaultError.locked())
        const parsed = curve === "Ed25519" ? HdPath.parseHardened(path) : HdPath.parse(path)
        return Either.flatMap(parsed, (p) =>
          Either.map(ring.derive(curve, p, now), (pair) =>
            new DerivedKey({
              keyType: curve,
              path: p.path,
              publicKey: pair.publicKey,
              privateKey: Redacted.make(pair.privateKey)
            })))
      })

    // Run `f` with the AES key of `version`, lent from the ring (no copy on this hot path).
    const withEncryptionKey = <A>(
      version: number,
      f: (key: Uint8Array) => Either.Either<A, VaultError.VaultError>
    ) =>
      Effect.flatMap(Clock.currentTimeMillis, (now): Either.Either<A, VaultError.VaultError> => {
        if (!ring.isUnlocked()) return Either.left(VaultError.locked())
        const checked = keyVersion(version)
        if (Either.isLeft(checked)) return Either.left(checked.left)
        return Either.flatMap(ring.use("Ed25519", encryptionPath(version), now, (pair) => f(pair.privateKey)), identity)
      })

    const encrypt = (plaintext: string | Redacted.Redacted<string>, keyVersion = CURRENT_KEY_VERSION) =>
      withEncryptionKey(keyVersion, (key) =>
        Either.right(Aead.seal(key, Redacted.isRedacted(plaintext) ? Redacted.value(plaintext) : plaintext, keyVersion)))

    const decrypt = (blob: EncryptedData) => withEncryptionKey(blob.key_version, (key) => Aead.open(key, blob))

    const unlockWith = (mnemonic: string, passphrase: Redacted.Redacted<string> | undefined) => {
      ring.unlock(Mnemonic.toSeed(mnemonic, passphrase === undefined ? "" : Redacted.value(passphrase)))
    }

    const service = Vault.of({
      unlock: Effect.fn("Vault.unlock")((mnemonic: Redacted.Redacted<string>, passphrase?: Redacted.Redacted<string>) =>
        Effect.suspend(() => {
          if (ring.isUnlocked()) return Either.left(VaultError.alreadyUnlocked())
          return Either.map(Mnemonic.canonical(Redacted.value(mnemonic)), (m) => unlockWith(m, passphrase))
        })
      ),
      unlockNew: Effect.fn("Vault.unlockNew")((wordCount: WordCount, passphrase?: Redacted.Redacted<string>) =>
        Effect.suspend(() => {
          if (ring.isUnlocked()) return Either.left(VaultError.alreadyUnlocked())
          if (!Mnemonic.isWordCount(wordCount)) return Either.left(VaultError.mnemonicWordCount(wordCount))
          const mnemonic = Mnemonic.generate(wordCount)
          unlockWith(mnemonic, passphrase)
          return Either.right(Redacted.make(mnemonic))
        })
      ),
      lock: Effect.sync(ring.lock).pipe(Effect.withSpan("Vault.lock")),
      isUnlocked: Effect.sync(ring.isUnlocked).pipe(Effect.withSpan("Vault.isUnlocked")),
      deriveEd25519: Effect.fn("Vault.deriveEd25519")((path: string) => keyAt("Ed25519", path)),
      deriveSecp256k1: Effect.fn("Vault.deriveSecp256k1")((path: string) => keyAt("Secp256k1", path)),
      encrypt: fnBulk("Vault.encrypt", encrypt),
      decrypt: fnBulk("Vault.decrypt", decrypt),
      rotate: fnBulk("Vault.rotate", (blob: EncryptedData, toVersion: number) =>
        Effect.suspend(() => {
          if (!ring.isUnlocked()) return Effect.fail(VaultError.locked())
          const target = keyVersion(toVersion)
          return Either.isLeft(target)
            ? Effect.fail(target.left)
            : Effect.flatMap(decrypt(blob), (plaintext) => encrypt(plaintext, toVersion))
        })
      )
    })
    return KeyRing.attach(service, ring)
  })

/** The vault with the default cache (1 hour, 64 keys). */
export const layer: Layer.Layer<Vault> = Layer.scoped(Vault, make())

/** The vault with cache settings of your own, e.g. `layerConfig({ cacheTtl: "10 minutes", cacheSize: 16 })`. */
export const layerConfig = (options: Options): Layer.Layer<Vault> => Layer.scoped(Vault, make(options))

/**
 * Unlock the vault from a mnemonic file (UTF-8, words separated by whitespace). The file's text is never part
 * of an error; an unreadable file is a `MnemonicFile` error.
 */
export const unlockFromFile = (
  path: string,
  passphrase?: Redacted.Redacted<string>
): Effect.Effect<void, VaultError.VaultError, Vault | FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(path, "utf-8").pipe(
      Effect.mapError((error) =>
        VaultError.mnemonicFile(path, error._tag === "SystemError" ? error.reason : error.description ?? "bad argument")
      )
    )
    const vault = yield* Vault
    yield* vault.unlock(Redacted.make(text), passphrase)
  }).pipe(Effect.withSpan("Vault.unlockFromFile"))

/** The node's identity key (`HdPath.nodeIdentity`), whose 32-byte private seed is the node's TLS raw key. */
export const nodeIdentity: Effect.Effect<DerivedKey, VaultError.VaultError, Vault> = Effect.flatMap(
  Vault,
  (vault) => vault.deriveEd25519(HdPath.nodeIdentity)
)

/**
 * `Effect.fn(name)(body)` for methods whose result is as large as the message (encrypt, decrypt, rotate).
 *
 * A span that ends while it can still reach the result keeps that result alive past the young generation: in a
 * loop of 3000 traced 64 KiB encryptions 212 MB were promoted to the old generation, against 19 MB here, and the
 * extra garbage collection tripled the cost of each call. So the span covers the same work but ends with `void`;
 * the result waits in a cell that is emptied as soon as it is handed on. The span also skips capturing a stack
 * trace (an `Error` per call, several µs): its name already says where it comes from.
 */
const fnBulk = <Args extends ReadonlyArray<any>, A, E>(name: string, body: (...args: Args) => Effect.Effect<A, E>) =>
(...args: Args): Effect.Effect<A, E> =>
  Effect.suspend(() => {
    const cell: { result?: A } = {}
    return body(...args).pipe(
      Effect.map((result) => {
        cell.result = result
      }),
      Effect.withSpan(name, { captureStackTrace: false }),
      Effect.map(() => {
        const result = cell.result as A
        delete cell.result
        return result
      })
    )
  })

const keyVersion = (version: number): Either.Either<number, VaultError.VaultError> => {
  if (version === 1) return Either.left(VaultError.legacyKeyVersion())
  if (!Number.isInteger(version) || version < 2 || version > HdPath.MAX_KEY_VERSION) {
    return Either.left(VaultError.invalidKeyVersion(version))
  }
  return Either.right(version)
}

// The parsed path `HdPath.encryptionKey(version)`, built directly: it is on every encrypt and decrypt.
const encryptionPath = (version: number): HdPath.Parsed => ({
  path: HdPath.encryptionKey(version),
  segments: [74, 2, 0, version - 2].map((index) => ({ index, hardened: true }))
})
