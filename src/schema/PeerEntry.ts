/**
 * A known peer (SPEC §10): one logical id that several credentials resolve to — TLS fingerprints (Ed25519 and/or
 * X.509) and an optional bearer token, stored only as its hash.
 *
 * JSON (config file, SQLite columns) uses the wire's snake_case names. Omitted `fingerprints`, `scopes` and
 * `resources` decode as empty, omitted `enabled` as `true`.
 */
import { Schema } from "effect"

/** `ed25519:` + 64 lowercase hex (the raw public key) or `SHA256:` + 64 lowercase hex (SHA-256 of the cert DER). */
export const Fingerprint = Schema.String.pipe(
  Schema.pattern(/^(?:ed25519|SHA256):[0-9a-f]{64}$/, {
    message: () => "expected a fingerprint: ed25519:<64 lowercase hex> or SHA256:<64 lowercase hex>"
  }),
  Schema.annotations({ identifier: "Fingerprint" })
)

/** A stored token hash: `sha256:` + 64 lowercase hex of SHA-256 over the token's UTF-8 bytes. */
export const TokenHash = Schema.String.pipe(
  Schema.pattern(/^sha256:[0-9a-f]{64}$/, { message: () => "expected a token hash: sha256:<64 lowercase hex>" }),
  Schema.annotations({ identifier: "TokenHash" })
)

/** A peer's logical id: letters, digits, `.`, `_`, `-` (it appears in `peer-id/op-name` pins, so no `/`). */
export const PeerId = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9._-]{1,128}$/, {
    message: () => "expected a peer id: 1-128 characters of letters, digits, '.', '_' or '-'"
  }),
  Schema.filter((id) => id !== "local" || "\"local\" is reserved for the node's own operations"),
  Schema.annotations({ identifier: "PeerId" })
)

/** Scopes granted to an identity. */
export const Scopes = Schema.Array(Schema.NonEmptyString)

/** Resources granted to an identity: resource type → actions. */
export const Resources = Schema.Record({ key: Schema.String, value: Schema.Array(Schema.NonEmptyString) })

export const PeerEntry = Schema.Struct({
  peer_id: PeerId,
  fingerprints: Schema.optionalWith(Schema.Array(Fingerprint), { default: () => [], exact: true }),
  auth_token_hash: Schema.optionalWith(TokenHash, { exact: true }),
  scopes: Schema.optionalWith(Scopes, { default: () => [], exact: true }),
  resources: Schema.optionalWith(Resources, { default: () => ({}), exact: true }),
  display_name: Schema.optionalWith(Schema.String, { exact: true }),
  enabled: Schema.optionalWith(Schema.Boolean, { default: () => true, exact: true })
}).annotations({ identifier: "PeerEntry" })
export type PeerEntry = typeof PeerEntry.Type

/** Build a peer entry in code; omitted lists are empty and the peer is enabled. Validates like decoding does. */
export const make = (entry: typeof PeerEntry.Encoded): PeerEntry => Schema.decodeSync(PeerEntry)(entry)
