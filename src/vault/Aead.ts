/**
 * AES-256-GCM in the `EncryptedData` format (SPEC §12), on node:crypto.
 *
 * `iv` is a fresh random 12-byte nonce per call, `data` is ciphertext ‖ 16-byte tag, no AAD, and `salt` is 32
 * random bytes kept only for wire compatibility. Internal to the vault: the key is a 32-byte SLIP-0010 key the
 * caller derived for `key_version`.
 *
 * Speed (bench/vault.ts): beyond the cipher, the contract costs a UTF-8 and a base64 conversion per message, and
 * on large messages the garbage collector's work grows with every fresh buffer. So this module allocates nothing
 * of the message's size that raw node:crypto would not: random bytes come from a pool, and `data` is assembled
 * and decoded in a reusable scratch buffer.
 */
import { Either, Redacted } from "effect"
import { isUtf8 } from "node:buffer"
import { createCipheriv, createDecipheriv, randomFillSync } from "node:crypto"
import * as VaultError from "../errors/VaultError.js"
import type { EncryptedData } from "../schema/EncryptedData.js"

const IV_BYTES = 12
const TAG_BYTES = 16
const SALT_BYTES = 32

// Random bytes for IVs and salts, filled 4 KiB at a time (one CSPRNG call per ~90 encryptions instead of two per
// encryption). Every byte is handed out once: IVs never repeat unless the CSPRNG does.
const pool = Buffer.alloc(4096)
let poolOffset = pool.length

const random = (n: number): Buffer => {
  if (poolOffset + n > pool.length) {
    randomFillSync(pool)
    poolOffset = 0
  }
  const out = pool.subarray(poolOffset, poolOffset + n)
  poolOffset += n
  return out
}

// `data` (ciphertext ‖ tag) is assembled and decoded here, so neither direction allocates a second buffer of
// the message's size. It holds ciphertext, which is not secret; messages above SCRATCH_LIMIT get a buffer of
// their own so the scratch never pins a large allocation. Callers use it synchronously and let go at once.
const SCRATCH_LIMIT = 1 << 20
let scratch = Buffer.alloc(0)

const scratchOf = (bytes: number): Buffer => {
  if (bytes > SCRATCH_LIMIT) return Buffer.allocUnsafe(bytes)
  if (scratch.length < bytes) scratch = Buffer.alloc(Math.max(bytes, 2 * scratch.length))
  return scratch
}

const decodeData = (base64: string): Buffer => {
  const buffer = scratchOf(Math.ceil(base64.length / 4) * 3)
  return buffer.subarray(0, buffer.write(base64, "base64"))
}

/** Encrypt `plaintext` (UTF-8) under `key`, labelling the blob with `keyVersion`. */
export const seal = (key: Uint8Array, plaintext: string, keyVersion: number): EncryptedData => {
  const iv = random(IV_BYTES)
  const salt = random(SALT_BYTES)
  const cipher = createCipheriv("aes-256-gcm", key, iv, { authTagLength: TAG_BYTES })
  const ciphertext = cipher.update(plaintext, "utf8")
  cipher.final()
  const data = scratchOf(ciphertext.length + TAG_BYTES)
  data.set(ciphertext)
  data.set(cipher.getAuthTag(), ciphertext.length)
  return {
    key_version: keyVersion,
    salt: salt.toString("base64"),
    iv: iv.toString("base64"),
    data: data.toString("base64", 0, ciphertext.length + TAG_BYTES)
  }
}

/** Decrypt and authenticate `blob` under `key`; the plaintext is returned `Redacted`. */
export const open = (key: Uint8Array, blob: EncryptedData): Either.Either<Redacted.Redacted<string>, VaultError.VaultError> => {
  const iv = Buffer.from(blob.iv, "base64")
  if (iv.length !== IV_BYTES) return Either.left(VaultError.malformedData(`iv must be ${IV_BYTES} bytes, got ${iv.length}`))
  const data = decodeData(blob.data)
  if (data.length < TAG_BYTES) {
    return Either.left(VaultError.malformedData(`data must hold at least the ${TAG_BYTES}-byte tag, got ${data.length} bytes`))
  }
  const decipher = createDecipheriv("aes-256-gcm", key, iv, { authTagLength: TAG_BYTES })
  decipher.setAuthTag(data.subarray(data.length - TAG_BYTES))
  const plaintext = decipher.update(data.subarray(0, data.length - TAG_BYTES))
  try {
    decipher.final()
  } catch {
    plaintext.fill(0)
    return Either.left(VaultError.authentication())
  }
  try {
    return isUtf8(plaintext)
      ? Either.right(Redacted.make(plaintext.toString("utf8")))
      : Either.left(VaultError.malformedData("the plaintext is not valid UTF-8"))
  } finally {
    plaintext.fill(0)
  }
}
