/**
 * Bearer tokens (SPEC §10): generation, hashing, constant-time verification, expiry.
 *
 * A generated token is `alk_` + 32 URL-safe base64 characters (24 bytes, 192 bits, from the OS CSPRNG). Its first
 * 8 characters are the API-key prefix (not secret); the remaining 168 random bits are the secret. Only the hash
 * `sha256:<lowercase hex>` is ever stored. The raw token is `Redacted` everywhere: it is returned once, by
 * {@link generate}, and never logged.
 */
import { Effect, Redacted } from "effect"
import * as crypto from "node:crypto"

/** Every generated token starts with this. */
export const TOKEN_PREFIX = "alk_"

/** Length of an API-key prefix: `alk_` + 4 characters. */
export const PREFIX_LENGTH = 8

/** Random bytes in a generated token (≥ 16 required; 24 gives 192 bits and a length divisible by 3). */
const RANDOM_BYTES = 24

/** A freshly generated token: the secret (shown once), its non-secret prefix and the hash to store. */
export interface Generated {
  readonly token: Redacted.Redacted<string>
  readonly prefix: string
  readonly hash: string
}

/** Lowercase hex SHA-256 of a string's UTF-8 bytes (hot path: one native call, no intermediate Buffer). */
export const sha256Hex = (text: string): string => crypto.hash("sha256", text, "hex")

/** The stored form of a token: `sha256:` + lowercase hex of SHA-256 over its UTF-8 bytes. */
export const hash = (token: Redacted.Redacted<string>): string => `sha256:${sha256Hex(Redacted.value(token))}`

/** The API-key prefix a token selects: its first 8 characters, or `undefined` for a token not starting `alk_`. */
export const prefixOf = (token: string): string | undefined =>
  token.length > PREFIX_LENGTH && token.startsWith(TOKEN_PREFIX) ? token.slice(0, PREFIX_LENGTH) : undefined

/** Generate a token from the CSPRNG. */
export const generate: Effect.Effect<Generated> = Effect.sync(() => {
  const raw = TOKEN_PREFIX + crypto.randomBytes(RANDOM_BYTES).toString("base64url")
  const token = Redacted.make(raw)
  return { token, prefix: raw.slice(0, PREFIX_LENGTH), hash: hash(token) }
})

/**
 * The comparable form of a stored `sha256:<hex>` hash: its 64 hex characters as bytes (comparing hex text is as
 * good as comparing the digest, and cheaper than decoding it on every lookup); `undefined` if malformed.
 */
export const digestOf = (storedHash: string): Buffer | undefined =>
  /^sha256:[0-9a-f]{64}$/.test(storedHash) ? Buffer.from(storedHash.slice(7), "latin1") : undefined

// One reusable buffer for the hex being compared: JavaScript runs `digestEquals` to completion, so it is never
// shared by two comparisons, and a lookup allocates nothing.
const scratch = Buffer.alloc(64)

/** Constant-time comparison of a token's SHA-256 (lowercase hex) with a {@link digestOf} result. */
export const digestEquals = (tokenHex: string, digest: Buffer): boolean =>
  tokenHex.length === 64 && digest.length === 64 && scratch.write(tokenHex, 0, "latin1") === 64 &&
  crypto.timingSafeEqual(scratch, digest)

/** Does `token` hash to `storedHash`? Constant-time in the token's contents. */
export const verify = (token: Redacted.Redacted<string>, storedHash: string): boolean => {
  const digest = digestOf(storedHash)
  return digest !== undefined && digestEquals(sha256Hex(Redacted.value(token)), digest)
}

/** A key expiring at `expiresAtMillis` is rejected from that instant on (`now >= expires_at`). */
export const isExpired = (expiresAtMillis: number | undefined, nowMillis: number): boolean =>
  expiresAtMillis !== undefined && nowMillis >= expiresAtMillis
