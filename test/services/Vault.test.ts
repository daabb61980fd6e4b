import { FileSystem } from "@effect/platform"
import { NodeFileSystem } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import * as ed from "@noble/ed25519"
import { keccak_256 } from "@noble/hashes/sha3.js"
import { HDKey } from "@scure/bip32"
import { Effect, Redacted } from "effect"
import { createECDH, createPrivateKey, createPublicKey, sign, verify } from "node:crypto"
import vectors from "../fixtures/bip39-english.json" with { type: "json" }
import { HdPath, Vault } from "../../src/index.js"
import { ABOUT, seedOf, slip10, ZOO } from "./VaultReference.js"

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")
const secret = Redacted.make<string>
const failure = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.flip(effect)

const unlocked = (mnemonic = ABOUT, passphrase?: string) =>
  Effect.gen(function*() {
    const vault = yield* Vault.make()
    yield* vault.unlock(secret(mnemonic), passphrase === undefined ? undefined : secret(passphrase))
    return vault
  })

describe("Vault lifecycle", () => {
  it.scoped("starts locked, and every key operation says Locked", () =>
    Effect.gen(function*() {
      const vault = yield* Vault.make()
      expect(yield* vault.isUnlocked).toBe(false)
      const blob = { key_version: 2, salt: "", iv: "", data: "" }
      const errors = [
        yield* failure(vault.deriveEd25519(HdPath.nodeIdentity)),
        yield* failure(vault.deriveSecp256k1("m/44'/60'/0'/0/0")),
        yield* failure(vault.encrypt("x")),
        yield* failure(vault.decrypt(blob)),
        yield* failure(vault.rotate(blob, 3)),
        // Locked comes first, even when the argument is also wrong.
        yield* failure(vault.deriveEd25519("not a path")),
        yield* failure(vault.encrypt("x", 1))
      ]
      for (const error of errors) {
        expect(error._tag).toBe("VaultError")
        expect(error.reason).toBe("Locked")
        expect(error.message).toContain("locked")
      }
    }))

  it.scoped("unlock, lock, unlock again; unlocking twice is AlreadyUnlocked", () =>
    Effect.gen(function*() {
      const vault = yield* unlocked()
      expect(yield* vault.isUnlocked).toBe(true)
      const first = yield* vault.deriveEd25519(HdPath.nodeIdentity)

      expect((yield* failure(vault.unlock(secret(ZOO)))).reason).toBe("AlreadyUnlocked")
      expect((yield* failure(vault.unlockNew(12))).reason).toBe("AlreadyUnlocked")
      // Still the first mnemonic's keys.
      expect((yield* vault.deriveEd25519(HdPath.nodeIdentity)).publicKey).toEqual(first.publicKey)

      yield* vault.lock
      yield* vault.lock // a no-op when locked
      expect(yield* vault.isUnlocked).toBe(false)
      expect((yield* failure(vault.deriveEd25519(HdPath.nodeIdentity))).reason).toBe("Locked")

      yield* vault.unlock(secret(ZOO))
      expect((yield* vault.deriveEd25519(HdPath.nodeIdentity)).publicKey).not.toEqual(first.publicKey)
    }))

  it.scoped("a bad mnemonic leaves the vault locked and says which problem it has", () =>
    Effect.gen(function*() {
      const vault = yield* Vault.make()
      const words = ABOUT.split(" ")
      const cases = [
        { mnemonic: words.slice(1).join(" "), problem: "WordCount" },
        { mnemonic: [...words.slice(0, 3), "notaword", ...words.slice(4)].join(" "), problem: "UnknownWord" },
        { mnemonic: ABOUT.replace(/about$/, "zoo"), problem: "Checksum" }
      ] as const
      for (const { mnemonic, problem } of cases) {
        const error = yield* failure(vault.unlock(secret(mnemonic)))
        expect(error.reason).toBe("InvalidMnemonic")
        expect(error.problem).toBe(problem)
        expect(yield* vault.isUnlocked).toBe(false)
      }
      expect((yield* failure(vault.unlock(secret(cases[1].mnemonic)))).position).toBe(4)
    }))

  it.scoped.each([12, 15, 18, 21, 24] as const)("unlockNew(%i) returns the mnemonic once, and it unlocks again", (words) =>
    Effect.gen(function*() {
      const vault = yield* Vault.make()
      const mnemonic = yield* vault.unlockNew(words)
      expect(Redacted.isRedacted(mnemonic)).toBe(true)
      expect(Redacted.value(mnemonic).split(" ")).toHaveLength(words)
      const identity = yield* vault.deriveEd25519(HdPath.nodeIdentity)
      yield* vault.lock
      yield* vault.unlock(mnemonic)
      expect((yield* vault.deriveEd25519(HdPath.nodeIdentity)).publicKey).toEqual(identity.publicKey)
    }))

  it.scoped("unlockNew refuses a word count BIP39 does not define", () =>
    Effect.gen(function*() {
      const vault = yield* Vault.make()
      const error = yield* failure(vault.unlockNew(13 as Vault.WordCount))
      expect(error.reason).toBe("InvalidMnemonic")
      expect(error.problem).toBe("WordCount")
      expect(yield* vault.isUnlocked).toBe(false)
    }))

  it.scoped("a passphrase gives different keys", () =>
    Effect.gen(function*() {
      const plain = yield* (yield* unlocked()).deriveEd25519(HdPath.nodeIdentity)
      const withPassphrase = yield* (yield* unlocked(ABOUT, "TREZOR")).deriveEd25519(HdPath.nodeIdentity)
      expect(withPassphrase.publicKey).not.toEqual(plain.publicKey)
      expect(hex(Redacted.value(withPassphrase.privateKey))).toBe(hex(slip10(seedOf(ABOUT, "TREZOR"), [74, 0, 0, 0])))
    }))

  it.effect("closing the layer's scope locks the vault", () =>
    Effect.gen(function*() {
      const vault = yield* Effect.scoped(unlocked())
      expect(yield* vault.isUnlocked).toBe(false)
    }))
})

describe("Vault on the 24 BIP39 vectors", () => {
  it.scoped("unlock(mnemonic, TREZOR) gives the vector's BIP32 master key", () =>
    Effect.gen(function*() {
      const vault = yield* Vault.make()
      for (const vector of vectors.vectors) {
        yield* vault.unlock(secret(vector.mnemonic), secret(vectors.passphrase))
        const master = yield* vault.deriveSecp256k1("m")
        const expected = HDKey.fromExtendedKey(vector.xprv)
        expect(hex(Redacted.value(master.privateKey))).toBe(hex(expected.privateKey!))
        expect(hex(master.publicKey)).toBe(hex(expected.publicKey!))
        yield* vault.lock
      }
    }))
})

describe("Vault.deriveEd25519", () => {
  it.scoped("derives standard SLIP-0010 keys (checked against an independent implementation)", () =>
    Effect.gen(function*() {
      const vault = yield* unlocked()
      const seed = seedOf(ABOUT)
      for (const [path, indices] of [
        [HdPath.nodeIdentity, [74, 0, 0, 0]],
        [HdPath.device(3), [74, 0, 0, 3]],
        [HdPath.sshHost, [74, 0, 1, 0]],
        [HdPath.encryptionKey(2), [74, 2, 0, 0]],
        ["m", []]
      ] as const) {
        const key = yield* vault.deriveEd25519(path)
        expect(key.keyType).toBe("Ed25519")
        expect(key.path).toBe(path)
        expect(hex(Redacted.value(key.privateKey))).toBe(hex(slip10(seed, indices)))
        expect(key.publicKey).toEqual(yield* Effect.promise(() => ed.getPublicKeyAsync(slip10(seed, indices))))
      }
    }))

  it.scoped("reads h like ' and returns the canonical path", () =>
    Effect.gen(function*() {
      const vault = yield* unlocked()
      const key = yield* vault.deriveEd25519("m/74h/0h/0h/0h")
      expect(key.path).toBe(HdPath.nodeIdentity)
      expect(key.publicKey).toEqual((yield* vault.deriveEd25519(HdPath.nodeIdentity)).publicKey)
    }))

  it.scoped("gives a usable Ed25519 signing key: sign with privateKey, verify with publicKey", () =>
    Effect.gen(function*() {
      const vault = yield* unlocked()
      const key = yield* Vault.nodeIdentity.pipe(Effect.provideService(Vault.Vault, vault))
      const message = new TextEncoder().encode("alknet")
      const seed = Redacted.value(key.privateKey)
      expect(seed).toHaveLength(32)
      expect(key.publicKey).toHaveLength(32)

      // @noble/ed25519 (pure JS, RFC 8032)
      const signature = yield* Effect.promise(() => ed.signAsync(message, seed))
      expect(yield* Effect.promise(() => ed.verifyAsync(signature, message, key.publicKey))).toBe(true)
      expect(yield* Effect.promise(() => ed.verifyAsync(signature, message, new Uint8Array(32).fill(9)))).toBe(false)

      // node:crypto (OpenSSL), the way a TLS stack would load the raw key
      const privateKey = createPrivateKey({
        key: { kty: "OKP", crv: "Ed25519", d: Buffer.from(seed).toString("base64url"), x: "" },
        format: "jwk"
      })
      const publicKey = createPublicKey({
        key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(key.publicKey).toString("base64url") },
        format: "jwk"
      })
      expect(verify(null, message, publicKey, sign(null, message, privateKey))).toBe(true)
      expect(Buffer.from(signature)).toEqual(sign(null, message, privateKey)) // Ed25519 is deterministic
    }))

  it.scoped("refuses a non-hardened segment and a malformed path, naming the segment", () =>
    Effect.gen(function*() {
      const vault = yield* unlocked()
      const soft = yield* failure(vault.deriveEd25519("m/74'/0'/0/0'"))
      expect(soft.reason).toBe("InvalidPath")
      expect(soft.message).toContain("segment 3 (0) is not hardened")
      const junk = yield* failure(vault.deriveEd25519("m/74'/zero'"))
      expect(junk.reason).toBe("InvalidPath")
      expect(junk.message).toContain(`segment 2 ("zero'")`)
    }))
})

describe("Vault.deriveSecp256k1", () => {
  it.scoped("derives the well-known Ethereum account of the 'abandon … about' mnemonic", () =>
    Effect.gen(function*() {
      const vault = yield* unlocked()
      const key = yield* vault.deriveSecp256k1("m/44'/60'/0'/0/0")
      expect(key.keyType).toBe("Secp256k1")
      expect(key.publicKey).toHaveLength(33)
      const ecdh = createECDH("secp256k1")
      ecdh.setPrivateKey(Redacted.value(key.privateKey))
      expect(hex(ecdh.getPublicKey(undefined, "compressed"))).toBe(hex(key.publicKey))
      const address = hex(keccak_256(ecdh.getPublicKey().subarray(1)).subarray(12))
      expect(address).toBe("9858effd232b4033e47d90003d41ec34ecaeda94")
    }))

  it.scoped("takes soft and hardened segments and rejects bad paths", () =>
    Effect.gen(function*() {
      const vault = yield* unlocked()
      const soft = yield* vault.deriveSecp256k1("m/0/1")
      expect(soft.path).toBe("m/0/1")
      const expected = HDKey.fromMasterSeed(seedOf(ABOUT)).derive("m/0/1")
      expect(hex(Redacted.value(soft.privateKey))).toBe(hex(expected.privateKey!))
      expect((yield* failure(vault.deriveSecp256k1("m/0/"))).reason).toBe("InvalidPath")
    }))
})

describe("Vault.unlockFromFile", () => {
  const withFile = (content: string) =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const path = `${dir}/mnemonic`
      yield* fs.writeFileString(path, content)
      return path
    })

  it.scoped("unlocks from a file with a trailing newline", () =>
    Effect.gen(function*() {
      const vault = yield* Vault.make()
      const path = yield* withFile(`${ABOUT}\n`)
      yield* Vault.unlockFromFile(path).pipe(Effect.provideService(Vault.Vault, vault))
      const key = yield* vault.deriveEd25519(HdPath.nodeIdentity)
      expect(hex(Redacted.value(key.privateKey))).toBe(hex(slip10(seedOf(ABOUT), [74, 0, 0, 0])))
    }).pipe(Effect.provide(NodeFileSystem.layer)))

  it.scoped("a missing file is a MnemonicFile error naming the path", () =>
    Effect.gen(function*() {
      const vault = yield* Vault.make()
      const error = yield* failure(
        Vault.unlockFromFile("/nonexistent/alknet/mnemonic").pipe(Effect.provideService(Vault.Vault, vault))
      )
      expect(error.reason).toBe("MnemonicFile")
      expect(error.message).toContain("/nonexistent/alknet/mnemonic")
      expect(error.message).toContain("NotFound")
    }).pipe(Effect.provide(NodeFileSystem.layer)))

  it.scoped("a file with a bad mnemonic fails without quoting it", () =>
    Effect.gen(function*() {
      const vault = yield* Vault.make()
      const path = yield* withFile("correct horse battery staple\n")
      const error = yield* failure(Vault.unlockFromFile(path).pipe(Effect.provideService(Vault.Vault, vault)))
      expect(error.reason).toBe("InvalidMnemonic")
      expect(error.message).not.toMatch(/horse|battery|staple/)
    }).pipe(Effect.provide(NodeFileSystem.layer)))
})
