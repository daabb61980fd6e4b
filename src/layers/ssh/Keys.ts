/**
 * Ed25519 keys in OpenSSH's formats, for SSH over alknet.
 *
 * - The node's SSH host key is the vault's Ed25519 key at `HdPath.sshHost` (`m/74'/0'/1'/0'`), or another hardened
 *   path the config names: one mnemonic, no separate key files.
 * - `ssh2` rejects PKCS#8 PEM for Ed25519, so a 32-byte seed is written in OpenSSH's own private key format
 *   (`openssh-key-v1`, unencrypted), kept `Redacted`.
 * - A public key is shown as a `known_hosts` / `authorized_keys` line (`ssh-ed25519 AAAA… comment`) and identified as
 *   OpenSSH does (`SHA256:` + unpadded base64 of the SHA-256 of its wire encoding).
 * - An SSH client key is resolved like a TLS one: its raw public key gives the alknet fingerprint `ed25519:<hex>`
 *   that peers list (SPEC §3), so a peer's node key is also its SSH key.
 */
import { createHash } from "node:crypto"
import { Effect, Redacted } from "effect"
import type { VaultError } from "../../errors/VaultError.js"
import * as HdPath from "../../schema/HdPath.js"
import * as DerivedKey from "../../schema/DerivedKey.js"
import * as Tls from "../../services/Tls.js"
import * as Vault from "../../services/Vault.js"

export const KEY_TYPE = "ssh-ed25519"

/** An Ed25519 key pair ready for `ssh2` and for display. */
export interface SshKey {
  /** The raw 32-byte public key. */
  readonly publicKey: Uint8Array
  /** The private key in OpenSSH format (PEM armour), for `ssh2`'s `hostKeys` / `privateKey`. */
  readonly privateKeyPem: Redacted.Redacted<string>
  /** `ssh-ed25519 AAAA…` (no comment). */
  readonly publicKeyLine: string
  /** OpenSSH's fingerprint: `SHA256:` + unpadded base64. */
  readonly fingerprint: string
}

const u32 = (n: number) => {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(n >>> 0)
  return b
}
const sshString = (data: Uint8Array | string) => {
  const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data)
  return Buffer.concat([u32(bytes.length), bytes])
}

/** The SSH wire encoding of an Ed25519 public key: string "ssh-ed25519", string key. */
export const publicKeyBlob = (publicKey: Uint8Array): Buffer => Buffer.concat([sshString(KEY_TYPE), sshString(publicKey)])

/** The raw public key inside an `ssh-ed25519` wire blob; undefined for any other blob. */
export const ed25519FromBlob = (blob: Uint8Array): Uint8Array | undefined => {
  const b = Buffer.from(blob)
  if (b.length !== 4 + KEY_TYPE.length + 4 + 32) return undefined
  if (b.readUInt32BE(0) !== KEY_TYPE.length || b.toString("utf8", 4, 4 + KEY_TYPE.length) !== KEY_TYPE) return undefined
  if (b.readUInt32BE(4 + KEY_TYPE.length) !== 32) return undefined
  return new Uint8Array(b.subarray(4 + KEY_TYPE.length + 4))
}

/** OpenSSH's fingerprint of a public key blob: `SHA256:` + unpadded base64 of its SHA-256. */
export const fingerprintOfBlob = (blob: Uint8Array): string =>
  `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`

/** The alknet fingerprint of an SSH client key (`ed25519:<hex>`, as peers list it); undefined if not Ed25519. */
export const alknetFingerprintOfBlob = (blob: Uint8Array): string | undefined => {
  const raw = ed25519FromBlob(blob)
  return raw === undefined ? undefined : Tls.ed25519Fingerprint(raw)
}

/** The unencrypted `openssh-key-v1` private key of an Ed25519 seed, PEM-armoured. */
const opensshPrivateKey = (seed: Uint8Array, publicKey: Uint8Array, comment: string): string => {
  // The check integer only detects a wrong passphrase; derive it so the same key always gives the same text.
  const check = createHash("sha256").update(publicKey).digest().subarray(0, 4)
  const secret = Buffer.concat([Buffer.from(seed), Buffer.from(publicKey)])
  let section = Buffer.concat([
    check,
    check,
    sshString(KEY_TYPE),
    sshString(publicKey),
    sshString(secret),
    sshString(comment)
  ])
  const padding = (8 - (section.length % 8)) % 8
  section = Buffer.concat([section, Buffer.from(Array.from({ length: padding }, (_, i) => i + 1))])
  const body = Buffer.concat([
    Buffer.from("openssh-key-v1\0", "latin1"),
    sshString("none"),
    sshString("none"),
    sshString(""),
    u32(1),
    sshString(publicKeyBlob(publicKey)),
    sshString(section)
  ])
  secret.fill(0)
  const base64 = body.toString("base64")
  body.fill(0)
  section.fill(0)
  const lines = base64.match(/.{1,70}/g) ?? []
  return `-----BEGIN OPENSSH PRIVATE KEY-----\n${lines.join("\n")}\n-----END OPENSSH PRIVATE KEY-----\n`
}

/** The SSH key of an Ed25519 seed (32 bytes). */
export const fromSeed = (seed: Uint8Array | Redacted.Redacted<Uint8Array>, comment = ""): SshKey => {
  const bytes = Redacted.isRedacted(seed) ? Redacted.value(seed) : seed
  const publicKey = Tls.ed25519PublicKey(bytes)
  const blob = publicKeyBlob(publicKey)
  return {
    publicKey,
    privateKeyPem: Redacted.make(opensshPrivateKey(bytes, publicKey, comment)),
    publicKeyLine: `${KEY_TYPE} ${blob.toString("base64")}`,
    fingerprint: fingerprintOfBlob(blob)
  }
}

/** The SSH key of the vault's Ed25519 key at `path` (default the SSH host path `m/74'/0'/1'/0'`). */
export const fromVault = (path: string = HdPath.sshHost): Effect.Effect<SshKey, VaultError, Vault.Vault> =>
  Effect.flatMap(Vault.Vault, (vault) => vault.deriveEd25519(path)).pipe(
    Effect.map((derived) => {
      const key = fromSeed(derived.privateKey)
      DerivedKey.wipe(derived)
      return key
    })
  )
