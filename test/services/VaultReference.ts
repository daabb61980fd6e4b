/**
 * An independent reference for the vault tests: BIP39 seed, SLIP-0010 and AES-256-GCM written straight from the
 * specifications with node:crypto, sharing no code with src/. A blob or key made here is "made by another
 * implementation".
 */
import { createCipheriv, createDecipheriv, createHmac, pbkdf2Sync, randomBytes } from "node:crypto"

export const ABOUT = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
export const ZOO = "zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo wrong"

export const seedOf = (mnemonic: string, passphrase = ""): Buffer =>
  pbkdf2Sync(mnemonic.normalize("NFKD"), `mnemonic${passphrase}`.normalize("NFKD"), 2048, 64, "sha512")

/** SLIP-0010 ed25519 private key at the hardened path given as plain indices (e.g. [74, 2, 0, 0]). */
export const slip10 = (seed: Buffer, hardenedIndices: ReadonlyArray<number>): Buffer => {
  let i = createHmac("sha512", "ed25519 seed").update(seed).digest()
  for (const index of hardenedIndices) {
    const data = Buffer.alloc(37)
    i.copy(data, 1, 0, 32)
    data.writeUInt32BE((index | 0x80000000) >>> 0, 33)
    i = createHmac("sha512", i.subarray(32)).update(data).digest()
  }
  return i.subarray(0, 32)
}

/** An EncryptedData blob as the reference format defines it. */
export const sealReference = (key: Buffer, plaintext: string, keyVersion: number) => {
  const iv = randomBytes(12)
  const cipher = createCipheriv("aes-256-gcm", key, iv)
  const ciphertext = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()])
  return {
    key_version: keyVersion,
    salt: randomBytes(32).toString("base64"),
    iv: iv.toString("base64"),
    data: Buffer.concat([ciphertext, cipher.getAuthTag()]).toString("base64")
  }
}

export const openReference = (
  key: Buffer,
  blob: { readonly iv: string; readonly data: string }
): string => {
  const data = Buffer.from(blob.data, "base64")
  const decipher = createDecipheriv("aes-256-gcm", key, Buffer.from(blob.iv, "base64"))
  decipher.setAuthTag(data.subarray(data.length - 16))
  return Buffer.concat([decipher.update(data.subarray(0, data.length - 16)), decipher.final()]).toString("utf8")
}
