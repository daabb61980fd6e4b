import { describe, expect, it } from "@effect/vitest"
import { Either, Redacted, Schema } from "effect"
import { DerivedKey } from "../../src/index.js"

const key = new DerivedKey.DerivedKey({
  keyType: "Ed25519",
  path: "m/74'/0'/0'/0'",
  publicKey: new Uint8Array(32).fill(0xab),
  privateKey: Redacted.make(new Uint8Array(32).fill(0xcd))
})

describe("DerivedKey JSON", () => {
  it("serializes with the private key redacted and the public key as hex", () => {
    expect(JSON.parse(JSON.stringify(key))).toEqual({
      _id: "DerivedKey",
      keyType: "Ed25519",
      path: "m/74'/0'/0'/0'",
      publicKey: "ab".repeat(32),
      privateKey: "<redacted>"
    })
    expect(Schema.encodeSync(DerivedKey.DerivedKeyFromJson)(key).privateKey).toBe("<redacted>")
  })

  it("decoding a redacted payload fails, saying why", () => {
    for (const payload of [JSON.stringify(key), JSON.stringify(Schema.encodeSync(DerivedKey.DerivedKeyFromJson)(key))]) {
      const decoded = DerivedKey.decodeJson(payload)
      expect(Either.isLeft(decoded)).toBe(true)
      if (Either.isLeft(decoded)) {
        expect(String(decoded.left)).toContain("privateKey is redacted")
        expect(String(decoded.left)).toContain("derive it again from the vault")
      }
    }
  })

  it("decodes a payload that does carry the key as hex", () => {
    const payload = JSON.stringify({ ...JSON.parse(JSON.stringify(key)), privateKey: "cd".repeat(32) })
    const decoded = Either.getOrThrow(DerivedKey.decodeJson(payload))
    expect(Redacted.value(decoded.privateKey)).toEqual(new Uint8Array(32).fill(0xcd))
    expect(decoded.publicKey).toEqual(key.publicKey)
    const bad = DerivedKey.decodeJson(JSON.stringify({ ...JSON.parse(payload), privateKey: "not hex" }))
    expect(Either.isLeft(bad) && String(bad.left)).toContain("privateKey must be lowercase hex")
  })
})
