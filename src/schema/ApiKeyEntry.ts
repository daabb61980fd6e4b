/**
 * An API key (SPEC §10): a bearer token that *is* the identity. `Identity.id` is the key's `prefix`, its scopes are
 * the key's scopes, and it carries no resources.
 *
 * `prefix` is the token's first 8 characters (`alk_` + 4), not secret, unique per store; it selects the entry in
 * O(1) and names the key in listings and `revoke`. Only the token's hash is stored. `expires_at` is an ISO-8601
 * instant; a key is rejected from that instant on (`now >= expires_at`).
 */
import { Schema } from "effect"
import { Scopes, TokenHash } from "./PeerEntry.js"

/** `alk_` + 4 URL-safe characters: the first 8 characters of a generated token. */
export const Prefix = Schema.String.pipe(
  Schema.pattern(/^alk_[A-Za-z0-9_-]{4}$/, {
    message: () => "expected an API key prefix: alk_ followed by 4 of A-Z a-z 0-9 _ -"
  }),
  Schema.annotations({ identifier: "ApiKeyPrefix" })
)

export const ApiKeyEntry = Schema.Struct({
  prefix: Prefix,
  hash: TokenHash,
  scopes: Schema.optionalWith(Scopes, { default: () => [], exact: true }),
  description: Schema.optionalWith(Schema.String, { default: () => "", exact: true }),
  expires_at: Schema.optionalWith(Schema.DateTimeUtc, { exact: true })
}).annotations({ identifier: "ApiKeyEntry" })
export type ApiKeyEntry = typeof ApiKeyEntry.Type

/** Build an API-key entry in code (validates like decoding; `expires_at` as an ISO-8601 string). */
export const make = (entry: typeof ApiKeyEntry.Encoded): ApiKeyEntry => Schema.decodeSync(ApiKeyEntry)(entry)
