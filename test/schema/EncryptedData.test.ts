import { describe, expect, it } from "@effect/vitest"
import { Either, Schema } from "effect"
import { EncryptedData } from "../../src/schema/EncryptedData.js"

const decode = Schema.decodeUnknownEither(Schema.parseJson(EncryptedData))

describe("EncryptedData", () => {
  it("decodes the reference JSON shape", () => {
    const json = `{"key_version":2,"salt":"${"A".repeat(43)}=","iv":"AAAAAAAAAAAAAAAA","data":"AAECAw=="}`
    const decoded = decode(json)
    expect(Either.isRight(decoded)).toBe(true)
    expect(Either.getOrThrow(decoded).key_version).toBe(2)
  })

  it("rejects unpadded or non-standard base64 and names the field", () => {
    const bad = decode(`{"key_version":2,"salt":"AA","iv":"AAAAAAAAAAAAAAAA","data":"AAECAw=="}`)
    expect(Either.isLeft(bad)).toBe(true)
    if (Either.isLeft(bad)) expect(String(bad.left)).toContain("salt")
  })

  it("rejects a key_version below 1", () => {
    const bad = decode(`{"key_version":0,"salt":"","iv":"","data":""}`)
    expect(Either.isLeft(bad)).toBe(true)
  })
})
