/**
 * SLIP-0010 key derivation for Ed25519 (hardened only), and the Ed25519 public key of a 32-byte seed.
 *
 *   master: I = HMAC-SHA512(key "ed25519 seed", seed)
 *   child:  I = HMAC-SHA512(key chain code, 0x00 ‖ parent key ‖ ser32(index + 2^31))
 *   key = I[0..32] (an RFC 8032 private key seed), chain code = I[32..64]
 *
 * Internal to the vault. Every intermediate buffer holding key material is overwritten with zeros once used.
 */
import { createHmac, createPrivateKey, createPublicKey } from "node:crypto"
import { HARDENED_OFFSET } from "../schema/HdPath.js"

/** A node of the derivation tree. `key` and `chainCode` are views of one 64-byte buffer; `wipe` zeroes both. */
export interface ExtendedKey {
  readonly key: Uint8Array
  readonly chainCode: Uint8Array
}

const MASTER_KEY = Buffer.from("ed25519 seed", "ascii")

const split = (i: Buffer): ExtendedKey => ({ key: i.subarray(0, 32), chainCode: i.subarray(32, 64) })

/** Overwrite an extended key's bytes with zeros. */
export const wipe = (node: ExtendedKey): void => {
  node.key.fill(0)
  node.chainCode.fill(0)
}

export const master = (seed: Uint8Array): ExtendedKey => split(createHmac("sha512", MASTER_KEY).update(seed).digest())

/** The hardened child `index` (0 ≤ index < 2^31; the offset is added here). */
export const child = (parent: ExtendedKey, index: number): ExtendedKey => {
  const data = Buffer.alloc(37)
  data.set(parent.key, 1)
  data.writeUInt32BE(index + HARDENED_OFFSET, 33)
  try {
    return split(createHmac("sha512", parent.chainCode).update(data).digest())
  } finally {
    data.fill(0)
  }
}

/** Derive along hardened `indices` from `seed`; intermediate nodes are wiped. The caller wipes the result. */
export const derive = (seed: Uint8Array, indices: ReadonlyArray<number>): ExtendedKey => {
  let node = master(seed)
  for (const index of indices) {
    const next = child(node, index)
    wipe(node)
    node = next
  }
  return node
}

/**
 * The 32-byte Ed25519 public key (RFC 8032) of a 32-byte private key seed, computed by node:crypto.
 *
 * The seed goes in as a JWK rather than PKCS#8 DER: OpenSSL 3's DER decoder takes over a millisecond per key,
 * the raw JWK import about 1/15 of that. Node reads only `d` from a private OKP JWK (`x` must merely be a string).
 * The cost is a base64url copy of the seed as a JS string, which cannot be wiped; it is dropped at once.
 */
export const publicKey = (privateKey: Uint8Array): Uint8Array => {
  const d = Buffer.from(privateKey.buffer, privateKey.byteOffset, privateKey.byteLength).toString("base64url")
  const jwk = createPublicKey(createPrivateKey({ key: { kty: "OKP", crv: "Ed25519", d, x: "" }, format: "jwk" }))
    .export({ format: "jwk" })
  return new Uint8Array(Buffer.from(jwk.x!, "base64url"))
}
