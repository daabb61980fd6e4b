import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Redacted, Schema } from "effect"
import { createCipheriv, randomBytes } from "node:crypto"
import { EncryptedData, HdPath, Vault } from "../../src/index.js"
import { ABOUT, openReference, sealReference, seedOf, slip10, ZOO } from "./VaultReference.js"

const unlocked = (mnemonic = ABOUT) =>
  Effect.gen(function*() {
    const vault = yield* Vault.make()
    yield* vault.unlock(Redacted.make(mnemonic))
    return vault
  })

const bytes = (base64: string) => Buffer.from(base64, "base64")
const flipBit = (base64: string, at: number) => {
  const b = bytes(base64)
  b[at] = b[at]! ^ 1
  return b.toString("base64")
}

describe("Vault.encrypt / decrypt", () => {
  it.scoped("round-trips text of every shape; decrypt returns it Redacted", () =>
    Effect.gen(function*() {
      const vault = yield* unlocked()
      for (const text of ["", "api-token", "ünïcødé ✓ 🔑 \u0000 \uFEFFbom", "\uFEFFleading BOM", "x".repeat(64 * 1024 + 1)]) {
        const blob = yield* vault.encrypt(text)
        const plaintext = yield* vault.decrypt(blob)
        expect(Redacted.isRedacted(plaintext)).toBe(true)
        expect(Redacted.value(plaintext)).toBe(text)
      }
      const fromRedacted = yield* vault.encrypt(Redacted.make("secret"))
      expect(Redacted.value(yield* vault.decrypt(fromRedacted))).toBe("secret")
    }))

  it.scoped("writes exactly the reference JSON: key_version, 32-byte salt, 12-byte IV, ciphertext ‖ 16-byte tag", () =>
    Effect.gen(function*() {
      const vault = yield* unlocked()
      const blob = yield* vault.encrypt("hello")
      const json = JSON.stringify(blob)
      expect(Object.keys(JSON.parse(json))).toEqual(["key_version", "salt", "iv", "data"])
      expect(blob.key_version).toBe(2)
      expect(bytes(blob.salt)).toHaveLength(32)
      expect(bytes(blob.iv)).toHaveLength(12)
      expect(bytes(blob.data)).toHaveLength(5 + 16)
      for (const field of [blob.salt, blob.iv, blob.data]) expect(bytes(field).toString("base64")).toBe(field)
      const decoded = Schema.decodeUnknownEither(Schema.parseJson(EncryptedData.EncryptedData))(json)
      expect(Either.getOrThrow(decoded)).toEqual(blob)
    }))

  it.scoped("uses a fresh IV (and salt) for each of 10 000 encryptions", () =>
    Effect.gen(function*() {
      const vault = yield* unlocked()
      const ivs = new Set<string>()
      const salts = new Set<string>()
      for (let i = 0; i < 10_000; i++) {
        const blob = yield* vault.encrypt("same plaintext")
        ivs.add(blob.iv)
        salts.add(blob.salt)
      }
      expect(ivs.size).toBe(10_000)
      expect(salts.size).toBe(10_000)
    }))

  it.scoped("any altered byte is an Authentication error", () =>
    Effect.gen(function*() {
      const vault = yield* unlocked()
      const blob = yield* vault.encrypt("do not touch")
      const tagStart = bytes(blob.data).length - 16
      const altered = [
        { ...blob, data: flipBit(blob.data, 0) }, // ciphertext
        { ...blob, data: flipBit(blob.data, tagStart) }, // tag
        { ...blob, iv: flipBit(blob.iv, 11) },
        { ...blob, key_version: 3 } // the right blob under another key
      ]
      for (const bad of altered) {
        const error = yield* Effect.flip(vault.decrypt(bad))
        expect(error.reason).toBe("Authentication")
        expect(error.message).toContain("decryption failed")
      }
      // The salt is stored but unused: changing it changes nothing.
      expect(Redacted.value(yield* vault.decrypt({ ...blob, salt: flipBit(blob.salt, 0) }))).toBe("do not touch")
    }))

  it.scoped("a blob from another mnemonic fails authentication", () =>
    Effect.gen(function*() {
      const blob = yield* (yield* unlocked(ZOO)).encrypt("theirs")
      expect((yield* Effect.flip((yield* unlocked()).decrypt(blob))).reason).toBe("Authentication")
    }))

  it.scoped("key_version 1 is the legacy format, refused clearly; nonsense versions are InvalidKeyVersion", () =>
    Effect.gen(function*() {
      const vault = yield* unlocked()
      const blob = yield* vault.encrypt("x")
      const legacy = yield* Effect.flip(vault.decrypt({ ...blob, key_version: 1 }))
      expect(legacy.reason).toBe("LegacyKeyVersion")
      expect(legacy.message).toContain("legacy password-based format")
      expect((yield* Effect.flip(vault.encrypt("x", 1))).reason).toBe("LegacyKeyVersion")
      expect((yield* Effect.flip(vault.rotate(blob, 1))).reason).toBe("LegacyKeyVersion")
      for (const version of [0, -2, 2.5, Number.NaN, HdPath.MAX_KEY_VERSION + 1]) {
        const error = yield* Effect.flip(vault.decrypt({ ...blob, key_version: version }))
        expect(error.reason).toBe("InvalidKeyVersion")
        expect((yield* Effect.flip(vault.encrypt("x", version))).reason).toBe("InvalidKeyVersion")
      }
    }))

  it.scoped("a malformed blob is MalformedData, saying what is wrong", () =>
    Effect.gen(function*() {
      const vault = yield* unlocked()
      const blob = yield* vault.encrypt("x")
      const shortIv = yield* Effect.flip(vault.decrypt({ ...blob, iv: Buffer.alloc(8).toString("base64") }))
      expect(shortIv.reason).toBe("MalformedData")
      expect(shortIv.message).toContain("iv must be 12 bytes, got 8")
      const noTag = yield* Effect.flip(vault.decrypt({ ...blob, data: Buffer.alloc(15).toString("base64") }))
      expect(noTag.reason).toBe("MalformedData")
      expect(noTag.message).toContain("16-byte tag")
    }))

  it.scoped("a plaintext that is not UTF-8 is MalformedData, not silently mangled", () =>
    Effect.gen(function*() {
      const vault = yield* unlocked()
      // Bytes 0xff 0xfe are not UTF-8; another implementation could still seal them.
      const key = slip10(seedOf(ABOUT), [74, 2, 0, 0])
      const iv = randomBytes(12)
      const cipher = createCipheriv("aes-256-gcm", key, iv)
      const data = Buffer.concat([cipher.update(Buffer.from([0xff, 0xfe])), cipher.final(), cipher.getAuthTag()])
      const blob = { key_version: 2, salt: randomBytes(32).toString("base64"), iv: iv.toString("base64"), data: data.toString("base64") }
      const error = yield* Effect.flip(vault.decrypt(blob))
      expect(error.reason).toBe("MalformedData")
      expect(error.message).toContain("not valid UTF-8")
    }))
})

describe("Vault.rotate", () => {
  it.scoped("re-encrypts v2 → v3; the v3 blob decrypts, under the v3 key only", () =>
    Effect.gen(function*() {
      const vault = yield* unlocked()
      const v2 = yield* vault.encrypt("rotate me")
      const v3 = yield* vault.rotate(v2, 3)
      expect(v3.key_version).toBe(3)
      expect(v3.iv).not.toBe(v2.iv)
      expect(Redacted.value(yield* vault.decrypt(v3))).toBe("rotate me")
      expect(Redacted.value(yield* vault.decrypt(v2))).toBe("rotate me") // old versions stay derivable
      expect((yield* Effect.flip(vault.decrypt({ ...v3, key_version: 2 }))).reason).toBe("Authentication")
      // Checked against the reference: the v3 key is the SLIP-0010 key at m/74'/2'/0'/1'.
      const v3Key = slip10(seedOf(ABOUT), [74, 2, 0, 1])
      expect(openReference(v3Key, v3)).toBe("rotate me")
      const back = yield* vault.rotate(v3, 2)
      expect(back.key_version).toBe(2)
      expect(Redacted.value(yield* vault.decrypt(back))).toBe("rotate me")
    }))

  it.scoped("refuses a tampered blob, leaving nothing re-encrypted", () =>
    Effect.gen(function*() {
      const vault = yield* unlocked()
      const blob = yield* vault.encrypt("x")
      expect((yield* Effect.flip(vault.rotate({ ...blob, data: flipBit(blob.data, 0) }, 3))).reason).toBe("Authentication")
      expect((yield* Effect.flip(vault.rotate(blob, 0))).reason).toBe("InvalidKeyVersion")
    }))
})

describe("interoperability", () => {
  it.scoped("decrypts a blob made by another implementation from the SLIP-0010 key at m/74'/2'/0'/0'", () =>
    Effect.gen(function*() {
      const key = slip10(seedOf(ABOUT), [74, 2, 0, 0])
      const blob = sealReference(key, "made elsewhere ✓", 2)
      const vault = yield* unlocked()
      expect(Redacted.value(yield* vault.decrypt(blob))).toBe("made elsewhere ✓")
    }))

  it.scoped("makes blobs another implementation decrypts", () =>
    Effect.gen(function*() {
      const vault = yield* unlocked()
      const blob = yield* vault.encrypt("made here ✓")
      expect(openReference(slip10(seedOf(ABOUT), [74, 2, 0, 0]), blob)).toBe("made here ✓")
    }))
})
