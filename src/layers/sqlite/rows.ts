/**
 * Row shapes of the SQLite tables and their mapping to domain entries. JSON columns hold JSON text; `enabled` is
 * 0/1; `expires_at` is ISO-8601 text; absent optional fields are NULL. Decoding a row checks it exactly like a
 * config file entry, so a row written by another tool cannot slip a malformed entry into the index.
 */
import { Effect, Schema } from "effect"
import { StoreError } from "../../errors/StoreError.js"
import { ApiKeyEntry, Prefix } from "../../schema/ApiKeyEntry.js"
import { formatError } from "../../schema/Config.js"
import { EncryptedData } from "../../schema/EncryptedData.js"
import { Fingerprint, PeerEntry, PeerId, Resources, Scopes, TokenHash } from "../../schema/PeerEntry.js"
import * as IdentityStore from "../../services/IdentityStore.js"

const Flag = Schema.transform(Schema.Literal(0, 1), Schema.Boolean, {
  strict: true,
  decode: (n) => n === 1,
  encode: (b) => (b ? 1 : 0)
})

const nullable = <A>(value: A | undefined): A | null => value ?? null

/** `peers(peer_id PK, fingerprints JSON, auth_token_hash, scopes JSON, resources JSON, display_name, enabled)` */
export const PeerRow = Schema.transform(
  Schema.Struct({
    peer_id: PeerId,
    fingerprints: Schema.parseJson(Schema.Array(Fingerprint)),
    auth_token_hash: Schema.NullOr(TokenHash),
    scopes: Schema.parseJson(Scopes),
    resources: Schema.parseJson(Resources),
    display_name: Schema.NullOr(Schema.String),
    enabled: Flag
  }),
  Schema.typeSchema(PeerEntry),
  {
    strict: true,
    decode: ({ auth_token_hash, display_name, ...row }) => ({
      ...row,
      ...(auth_token_hash === null ? {} : { auth_token_hash }),
      ...(display_name === null ? {} : { display_name })
    }),
    encode: (peer) => ({
      ...peer,
      auth_token_hash: nullable(peer.auth_token_hash),
      display_name: nullable(peer.display_name)
    })
  }
)

/** `api_keys(prefix PK, hash, scopes JSON, description, expires_at)` */
export const ApiKeyRow = Schema.transform(
  Schema.Struct({
    prefix: Prefix,
    hash: TokenHash,
    scopes: Schema.parseJson(Scopes),
    description: Schema.String,
    expires_at: Schema.NullOr(Schema.DateTimeUtc)
  }),
  Schema.typeSchema(ApiKeyEntry),
  {
    strict: true,
    decode: ({ expires_at, ...row }) => ({ ...row, ...(expires_at === null ? {} : { expires_at }) }),
    encode: (key) => ({ ...key, expires_at: nullable(key.expires_at) })
  }
)

/** `credentials(provider PK, key_version, salt, iv, data)` */
export const CredentialRow = Schema.Struct({ provider: Schema.NonEmptyString, ...EncryptedData.fields })

/** Encode a domain value as its row; a value that does not fit is a `Serialization` error naming `what`. */
const encode = <A, I>(schema: Schema.Schema<A, I>, what: string, value: A) =>
  Schema.encode(schema)(value).pipe(
    Effect.mapError((error) => new StoreError({ reason: "Serialization", message: `invalid ${what}: ${formatError(error)}` }))
  )

/** A peer entry, checked like a config entry, as its row (every SQL store writes the same rows). */
export const peerRow = (peer: PeerEntry) =>
  Effect.flatMap(IdentityStore.validatePeer(peer), (p) => encode(PeerRow, `peer ${JSON.stringify(p.peer_id)}`, p))

/** An API key entry, checked like a config entry, as its row. */
export const keyRow = (key: ApiKeyEntry) =>
  Effect.flatMap(IdentityStore.validateApiKey(key), (k) => encode(ApiKeyRow, `api key ${JSON.stringify(k.prefix)}`, k))
