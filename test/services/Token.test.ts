import { describe, expect, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import * as crypto from "node:crypto"
import * as util from "node:util"
import * as Token from "../../src/services/Token.js"

describe("Token", () => {
  it.effect("generates alk_ + 192 random bits, URL-safe, different every time", () =>
    Effect.gen(function*() {
      const tokens = yield* Effect.forEach(Array.from({ length: 200 }), () => Token.generate)
      const raws = tokens.map((t) => Redacted.value(t.token))
      for (const raw of raws) expect(raw).toMatch(/^alk_[A-Za-z0-9_-]{32}$/)
      expect(Buffer.from(raws[0]!.slice(4), "base64url")).toHaveLength(24)
      expect(new Set(raws).size).toBe(raws.length)
      for (const t of tokens) expect(t.prefix).toBe(Redacted.value(t.token).slice(0, 8))
    }))

  it.effect("the hash is sha256: + lowercase hex of the token's UTF-8 bytes", () =>
    Effect.gen(function*() {
      const raw = "alk_ünïcødé-token"
      const expected = crypto.createHash("sha256").update(Buffer.from(raw, "utf8")).digest("hex")
      expect(Token.hash(Redacted.make(raw))).toBe(`sha256:${expected}`)
      const { hash, token } = yield* Token.generate
      expect(hash).toBe(Token.hash(token))
      expect(hash).toMatch(/^sha256:[0-9a-f]{64}$/)
    }))

  it.effect("verify matches only the right token and rejects malformed hashes", () =>
    Effect.gen(function*() {
      const { hash, token } = yield* Token.generate
      expect(Token.verify(token, hash)).toBe(true)
      expect(Token.verify(Redacted.make(Redacted.value(token) + "x"), hash)).toBe(false)
      expect(Token.verify(token, hash.toUpperCase())).toBe(false)
      expect(Token.verify(token, hash.slice(0, -2))).toBe(false)
      expect(Token.verify(token, `md5:${hash.slice(7)}`)).toBe(false)
    }))

  it.effect("the raw token never shows in String, JSON or inspect", () =>
    Effect.gen(function*() {
      const { token } = yield* Token.generate
      const raw = Redacted.value(token)
      for (const shown of [String(token), JSON.stringify({ token }), util.inspect({ token }), `${token}`]) {
        expect(shown).not.toContain(raw.slice(4))
      }
    }))

  it("prefixOf needs alk_ and more than 8 characters; expiry is now >= expires_at", () => {
    expect(Token.prefixOf("alk_abcdXYZ")).toBe("alk_abcd")
    expect(Token.prefixOf("alk_abcd")).toBeUndefined()
    expect(Token.prefixOf("ALK_abcdXYZ")).toBeUndefined()
    expect(Token.isExpired(undefined, Number.MAX_SAFE_INTEGER)).toBe(false)
    expect(Token.isExpired(1000, 999)).toBe(false)
    expect(Token.isExpired(1000, 1000)).toBe(true)
  })
})
