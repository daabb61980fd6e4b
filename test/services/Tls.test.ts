import { describe, expect, it } from "@effect/vitest"
import { createHash, createPrivateKey, randomBytes, X509Certificate } from "node:crypto"
import { writeFile } from "node:fs/promises"
import { join } from "node:path"
import { Effect, Either, Option, Redacted } from "effect"
import * as Tls from "../../src/services/Tls.js"
import { caFiles } from "../layers/quic/certs.js"

const leafDer = (credentials: Tls.TlsCredentials) => new X509Certificate(credentials.certificatePem).raw

describe("Tls", () => {
  it.effect("a RawKey's fingerprint is ed25519:<hex of its public key>, whatever certificate carries it", () =>
    Effect.gen(function*() {
      const seed = randomBytes(32)
      const expected = `ed25519:${Buffer.from(Tls.ed25519PublicKey(seed)).toString("hex")}`
      const first = yield* Tls.load(Tls.RawKey(seed))
      const second = yield* Tls.load(Tls.RawKey(seed))
      expect(first.fingerprint).toBe(expected)
      expect(second.fingerprint).toBe(expected)
      // Two certificates (different serials) around one key: same fingerprint, computed from the DER.
      expect(first.certificatePem).not.toBe(second.certificatePem)
      expect(Tls.fingerprint(leafDer(first))).toEqual(Option.some(expected))
      expect(Tls.fingerprint(leafDer(second))).toEqual(Option.some(expected))
      // The certificate really carries that key: it matches the private key we present.
      expect(new X509Certificate(first.certificatePem).checkPrivateKey(createPrivateKey(Redacted.value(first.privateKeyPem))))
        .toBe(true)
    }))

  it.effect("matches the public key of RFC 8032 test vector 1", () =>
    Effect.gen(function*() {
      const seed = Buffer.from("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60", "hex")
      const credentials = yield* Tls.load(Tls.RawKey(seed))
      expect(credentials.fingerprint).toBe("ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    }))

  it.effect("a RawKey seed must be 32 bytes", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Tls.load(Tls.RawKey(randomBytes(31))))
      expect(error.reason).toBe("Identity")
      expect(error.message).toContain("32-byte")
    }))

  it.effect("SelfSigned makes a fresh Ed25519 identity each time", () =>
    Effect.gen(function*() {
      const a = yield* Tls.load(Tls.SelfSigned)
      const b = yield* Tls.load(Tls.SelfSigned)
      expect(a.fingerprint).toMatch(/^ed25519:[0-9a-f]{64}$/)
      expect(a.fingerprint).not.toBe(b.fingerprint)
    }))

  it.effect("a non-Ed25519 certificate's fingerprint is SHA256:<hex of the leaf DER>", () =>
    Effect.gen(function*() {
      const files = yield* caFiles
      const credentials = yield* Tls.load(Tls.X509(files.certFile, files.keyFile))
      const expected = `SHA256:${createHash("sha256").update(files.leafDer).digest("hex")}`
      expect(credentials.fingerprint).toBe(expected)
      expect(Tls.fingerprint(files.leafDer)).toEqual(Option.some(expected))
      expect(Tls.fingerprint(new Uint8Array([1, 2, 3]))).toEqual(Option.none())
    }).pipe(Effect.scoped))

  it.effect("X509 from PEM files: a missing file and a mismatched key are clear startup errors", () =>
    Effect.gen(function*() {
      const files = yield* caFiles
      const missingCert = yield* Effect.flip(Tls.load(Tls.X509(join(files.dir, "nope.crt"), files.keyFile)))
      expect(missingCert.reason).toBe("Identity")
      expect(missingCert.message).toBe(`TLS certificate file not found: ${join(files.dir, "nope.crt")}`)

      const missingKey = yield* Effect.flip(Tls.load(Tls.X509(files.certFile, join(files.dir, "nope.key"))))
      expect(missingKey.message).toBe(`TLS private key file not found: ${join(files.dir, "nope.key")}`)

      const mismatch = yield* Effect.flip(Tls.load(Tls.X509(files.certFile, files.otherKeyFile)))
      expect(mismatch.reason).toBe("Identity")
      expect(mismatch.message).toBe(`TLS private key ${files.otherKeyFile} does not match the certificate ${files.certFile}`)

      const garbage = join(files.dir, "garbage.pem")
      yield* Effect.promise(() => writeFile(garbage, "not a pem"))
      const notCert = yield* Effect.flip(Tls.load(Tls.X509(garbage, files.keyFile)))
      expect(notCert.message).toBe(`TLS certificate file ${garbage} holds no PEM certificate`)
      const notKey = yield* Effect.flip(Tls.load(Tls.X509(files.certFile, garbage)))
      expect(notKey.message).toContain(`TLS private key file ${garbage} does not hold a PEM private key`)
    }).pipe(Effect.scoped))

  it.effect("a RawKey from a PKCS#8 PEM file; a non-Ed25519 key file is refused", () =>
    Effect.gen(function*() {
      const files = yield* caFiles
      const seed = randomBytes(32)
      const pemFile = join(files.dir, "node.key")
      const pem = createPrivateKey({
        key: Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]),
        format: "der",
        type: "pkcs8"
      }).export({ format: "pem", type: "pkcs8" })
      yield* Effect.promise(() => writeFile(pemFile, pem))
      const identity = yield* Tls.rawKeyFromPemFile(pemFile)
      const credentials = yield* Tls.load(identity)
      expect(credentials.fingerprint).toBe(`ed25519:${Buffer.from(Tls.ed25519PublicKey(seed)).toString("hex")}`)

      const ecdsa = yield* Effect.either(Tls.rawKeyFromPemFile(files.keyFile))
      expect(Either.isLeft(ecdsa) && ecdsa.left.message).toBe(`identity key file ${files.keyFile} holds a ec key, not Ed25519`)
    }).pipe(Effect.scoped))

  it("secrets stay out of logs and JSON", () => {
    const identity = Tls.RawKey(randomBytes(32))
    expect(JSON.stringify(identity)).not.toMatch(/[0-9a-f]{64}/)
    expect(String(identity._tag === "RawKey" && identity.seed)).toBe("<redacted>")
  })
})
