import { describe, expect, it } from "@effect/vitest"
import { Either, Schema } from "effect"
import { EncryptedData } from "../../src/schema/EncryptedData.js"

const decode = Schema.decodeUnknownEither(Schema.parseJson(EncryptedData))
const b64 = (bytes: number) => Buffer.alloc(bytes, 7).toString("base64")
const blob = (fields: Record<string, unknown> = {}) =>
  JSON.stringify({ key_version: 2, salt: b64(32), iv: b64(12), data: b64(21), ...fields })
const problem = (json: string) => {
  const decoded = decode(json)
  expect(Either.isLeft(decoded)).toBe(true)
  return Either.isLeft(decoded) ? String(decoded.left) : ""
}

describe("EncryptedData", () => {
  it("decodes the reference JSON shape", () => {
    const decoded = Either.getOrThrow(decode(blob()))
    expect(decoded).toEqual({ key_version: 2, salt: b64(32), iv: b64(12), data: b64(21) })
    expect(JSON.stringify(decoded)).toBe(blob())
  })

  it("rejects unpadded or non-standard base64 and names the field", () => {
    expect(problem(blob({ salt: "AA" }))).toContain("salt")
    expect(problem(blob({ data: b64(21).replace(/\+|\//g, "-").replace(/=+$/, "") + "_" }))).toContain("data")
  })

  it("leaves byte lengths to the vault, which reports them as MalformedData (a store keeps any well-formed blob)", () => {
    expect(Either.isRight(decode(blob({ iv: b64(16), data: b64(3) })))).toBe(true)
  })

  it("accepts key_version 1 (so the vault can say it is legacy) but nothing below, and only integers", () => {
    expect(Either.isRight(decode(blob({ key_version: 1 })))).toBe(true)
    expect(problem(blob({ key_version: 0 }))).toContain("key_version")
    expect(problem(blob({ key_version: 2.5 }))).toContain("key_version")
  })
})
