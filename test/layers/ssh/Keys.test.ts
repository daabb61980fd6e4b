import { describe, expect, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import ssh2 from "ssh2"
import * as Keys from "../../../src/layers/ssh/Keys.js"
import * as HdPath from "../../../src/schema/HdPath.js"
import * as Tls from "../../../src/services/Tls.js"
import * as Vault from "../../../src/services/Vault.js"

const MNEMONIC = Redacted.make(
  "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
)
const seed = new Uint8Array(32).map((_, i) => i + 1)

/** ssh-keygen (openssh-client) reads the key as OpenSSH itself does; `.ci/run` installs it when missing. */
const sshKeygen = (args: ReadonlyArray<string>) => execFileSync("ssh-keygen", [...args], { encoding: "utf8" }).trim()

describe("SSH keys", () => {
  it("an Ed25519 seed is an OpenSSH private key that ssh2 and ssh-keygen read as the same key", () => {
    const key = Keys.fromSeed(seed)
    expect(Buffer.from(key.publicKey)).toEqual(Buffer.from(Tls.ed25519PublicKey(seed)))
    const pem = Redacted.value(key.privateKeyPem)
    expect(pem).toMatch(/^-----BEGIN OPENSSH PRIVATE KEY-----\n/)

    const parsed = ssh2.utils.parseKey(pem)
    if (parsed instanceof Error) throw parsed
    expect(parsed.type).toBe("ssh-ed25519")
    expect(parsed.isPrivateKey()).toBe(true)
    expect(`ssh-ed25519 ${parsed.getPublicSSH().toString("base64")}`).toBe(key.publicKeyLine)
    // It signs as the seed's key: the signature verifies under the public key alone.
    const data = Buffer.from("alknet")
    const signature = parsed.sign(data)
    if (signature instanceof Error) throw signature
    const publicOnly = ssh2.utils.parseKey(Buffer.from(key.publicKeyLine))
    if (publicOnly instanceof Error) throw publicOnly
    expect(publicOnly.verify(data, signature)).toBe(true)

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "alknet-sshkey-"))
    try {
      const file = path.join(dir, "id_ed25519")
      fs.writeFileSync(file, pem, { mode: 0o600 })
      expect(sshKeygen(["-y", "-f", file])).toBe(key.publicKeyLine)
      expect(sshKeygen(["-l", "-E", "sha256", "-f", file])).toContain(key.fingerprint)
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it("the same seed always gives the same key text; another seed another key", () => {
    expect(Redacted.value(Keys.fromSeed(seed).privateKeyPem)).toBe(Redacted.value(Keys.fromSeed(seed).privateKeyPem))
    expect(Keys.fromSeed(new Uint8Array(32).fill(9)).fingerprint).not.toBe(Keys.fromSeed(seed).fingerprint)
  })

  it("a client key's alknet fingerprint is the ed25519:<hex> a peer lists; other key types have none", () => {
    const key = Keys.fromSeed(seed)
    const blob = Keys.publicKeyBlob(key.publicKey)
    expect(Keys.alknetFingerprintOfBlob(blob)).toBe(Tls.ed25519Fingerprint(key.publicKey))
    const rsa = Buffer.concat([Buffer.from([0, 0, 0, 7]), Buffer.from("ssh-rsa"), Buffer.alloc(40)])
    expect(Keys.alknetFingerprintOfBlob(rsa)).toBeUndefined()
    expect(Keys.alknetFingerprintOfBlob(blob.subarray(0, blob.length - 1))).toBeUndefined()
  })

  it.effect("the host key is the vault's key at m/74'/0'/1'/0', not the node identity key", () =>
    Effect.gen(function*() {
      const vault = yield* Vault.Vault
      yield* vault.unlock(MNEMONIC)
      const host = yield* Keys.fromVault()
      const derived = yield* vault.deriveEd25519(HdPath.sshHost)
      expect(Buffer.from(host.publicKey)).toEqual(Buffer.from(derived.publicKey))
      const node = yield* Vault.nodeIdentity
      expect(Buffer.from(host.publicKey)).not.toEqual(Buffer.from(node.publicKey))
      // The private key never shows.
      expect(JSON.stringify(host)).not.toContain("OPENSSH PRIVATE KEY")
    }).pipe(Effect.provide(Vault.layer)))
})
