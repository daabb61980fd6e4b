/**
 * The vault's ciphertext format (SPEC §12), byte-compatible with the reference:
 * `{"key_version":2,"salt":"…","iv":"…","data":"…"}`, every binary field standard padded base64.
 *
 * - `key_version` selects the HD path of the encryption key (v ≥ 2: `m/74'/2'/0'/{v-2}'`; v1 is legacy).
 * - `salt` is 32 random bytes, stored for wire compatibility and otherwise unused.
 * - `iv` is the 12-byte AES-GCM nonce; `data` is ciphertext ‖ 16-byte tag.
 */
import { Schema } from "effect"

const Base64 = Schema.String.pipe(
  Schema.pattern(/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/),
  Schema.annotations({ identifier: "Base64", description: "standard padded base64" })
)

export const EncryptedData = Schema.Struct({
  key_version: Schema.Int.pipe(Schema.greaterThanOrEqualTo(1)),
  salt: Base64,
  iv: Base64,
  data: Base64
}).annotations({ identifier: "EncryptedData" })
export type EncryptedData = typeof EncryptedData.Type
