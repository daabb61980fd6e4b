/**
 * TLS identities and fingerprints (SPEC §3).
 *
 * A node presents one identity on every connection it accepts or opens:
 *
 * - `RawKey`: an Ed25519 key (32-byte seed), e.g. the vault's node identity key. On the wire it is a self-signed
 *   X.509 certificate carrying that key; the identity is the key, so the same seed always has the same fingerprint.
 * - `X509`: a certificate chain and its private key, read from PEM files at startup.
 * - `SelfSigned`: a fresh Ed25519 key and certificate made at startup (the fingerprint changes on every start).
 *
 * A fingerprint names a peer's key: `ed25519:` + lowercase hex of the raw 32-byte public key when the certificate's
 * key is Ed25519 (SPKI algorithm OID 1.3.101.112), otherwise `SHA256:` + lowercase hex of SHA-256 over the leaf
 * certificate DER.
 */
import { createHash, createPrivateKey, createPublicKey, randomBytes, webcrypto, X509Certificate } from "node:crypto"
import type { KeyObject } from "node:crypto"
import { readFile } from "node:fs/promises"
import { Data, Effect, Option, Redacted } from "effect"
import * as EndpointError from "../errors/EndpointError.js"

/**
 * The certificate library (with the `Reflect` metadata polyfill it needs), loaded when a certificate is first made:
 * importing alknet neither pays for it (~0.1 s of CPU) nor patches the global `Reflect`.
 */
let certificateLibrary: Promise<typeof import("@peculiar/x509")> | undefined
const x509Library = () =>
  certificateLibrary ??= import("reflect-metadata").then(() => import("@peculiar/x509")).then(({ default: x509 }) => {
    // The package is CommonJS: its exports object is the default export (in Node and in the CLI's esbuild bundle,
    // which gives a dynamically imported CommonJS module no named exports).
    x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0])
    return x509
  })

export type TlsIdentity = Data.TaggedEnum<{
  /** An Ed25519 private key given by its 32-byte seed. */
  RawKey: { readonly seed: Redacted.Redacted<Uint8Array> }
  /** PEM files: the certificate chain (leaf first) and the private key of the leaf. */
  X509: { readonly certFile: string; readonly keyFile: string }
  /** A key and certificate generated at startup. */
  SelfSigned: {}
}>
export const TlsIdentity = Data.taggedEnum<TlsIdentity>()

/** An identity from an Ed25519 seed (32 bytes). */
export const RawKey = (seed: Uint8Array | Redacted.Redacted<Uint8Array>): TlsIdentity =>
  TlsIdentity.RawKey({ seed: Redacted.isRedacted(seed) ? seed : Redacted.make(seed) })

/** An identity from PEM files. */
export const X509 = (certFile: string, keyFile: string): TlsIdentity => TlsIdentity.X509({ certFile, keyFile })

/** A key and certificate generated at startup. */
export const SelfSigned: TlsIdentity = TlsIdentity.SelfSigned()

/** What a transport presents on the wire, ready for a TLS stack. */
export interface TlsCredentials {
  /** PEM certificate chain, leaf first. */
  readonly certificatePem: string
  /** PEM (PKCS#8) private key of the leaf. */
  readonly privateKeyPem: Redacted.Redacted<string>
  /** This identity's fingerprint, as peers compute it. */
  readonly fingerprint: string
}

const ED25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex")

/** `ed25519:` + lowercase hex of a raw 32-byte Ed25519 public key. */
export const ed25519Fingerprint = (publicKey: Uint8Array): string => `ed25519:${Buffer.from(publicKey).toString("hex")}`

/** The raw 32-byte public key of an Ed25519 key object (from its JWK `x`). */
const rawEd25519PublicKey = (key: KeyObject): Uint8Array =>
  Buffer.from((key.type === "public" ? key : createPublicKey(key)).export({ format: "jwk" }).x ?? "", "base64url")

/** The Ed25519 public key (32 bytes) of a 32-byte seed. */
export const ed25519PublicKey = (seed: Uint8Array): Uint8Array => rawEd25519PublicKey(ed25519PrivateKey(seed))

const ed25519PrivateKey = (seed: Uint8Array): KeyObject =>
  createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: "der", type: "pkcs8" })

/**
 * The fingerprint of a certificate given as DER (SPEC §3); `None` when the bytes are not a certificate.
 * Only the leaf of a chain names the peer.
 */
export const fingerprint = (certificateDer: Uint8Array): Option.Option<string> => {
  try {
    const publicKey = new X509Certificate(certificateDer).publicKey
    // OpenSSL reports "ed25519" exactly when the SPKI algorithm is id-Ed25519 (1.3.101.112).
    return Option.some(
      publicKey.asymmetricKeyType === "ed25519"
        ? ed25519Fingerprint(rawEd25519PublicKey(publicKey))
        : `SHA256:${createHash("sha256").update(certificateDer).digest("hex")}`
    )
  } catch {
    return Option.none()
  }
}

const identityError = (message: string) => EndpointError.make("Identity", message)

/** A self-signed certificate carrying the Ed25519 key of `seed`. */
const selfSignedEd25519 = (seed: Uint8Array): Effect.Effect<TlsCredentials, EndpointError.EndpointError> =>
  Effect.gen(function*() {
    if (seed.length !== 32) {
      return yield* identityError(`an Ed25519 identity key must be a 32-byte seed, got ${seed.length} bytes`)
    }
    const privateKey = ed25519PrivateKey(seed)
    const pkcs8 = privateKey.export({ format: "der", type: "pkcs8" })
    const spki = createPublicKey(privateKey).export({ format: "der", type: "spki" })
    const certificate = yield* Effect.tryPromise({
      try: async () => {
        const x509 = await x509Library()
        const algorithm = { name: "Ed25519" }
        const keys = {
          privateKey: await webcrypto.subtle.importKey("pkcs8", pkcs8, algorithm, false, ["sign"]),
          publicKey: await webcrypto.subtle.importKey("spki", spki, algorithm, true, ["verify"])
        }
        const now = Date.now()
        return x509.X509CertificateGenerator.createSelfSigned({
          // A positive serial: clear the top bit of the first byte.
          serialNumber: (randomBytes(16)[0]! & 0x7f).toString(16).padStart(2, "0") + randomBytes(15).toString("hex"),
          name: "CN=alknet",
          notBefore: new Date(now - 60 * 60 * 1000),
          notAfter: new Date(now + 10 * 365 * 24 * 60 * 60 * 1000),
          signingAlgorithm: algorithm,
          keys,
          extensions: [new x509.BasicConstraintsExtension(false, undefined, true)]
        })
      },
      catch: (e) => identityError(`cannot make a certificate for the Ed25519 identity: ${String(e)}`)
    })
    return {
      certificatePem: certificate.toString("pem"),
      privateKeyPem: Redacted.make(privateKey.export({ format: "pem", type: "pkcs8" }).toString()),
      fingerprint: ed25519Fingerprint(rawEd25519PublicKey(privateKey))
    }
  })

const readText = (path: string, what: string) =>
  Effect.tryPromise({
    try: () => readFile(path, "utf8"),
    catch: (e) =>
      identityError(
        (e as NodeJS.ErrnoException).code === "ENOENT"
          ? `${what} file not found: ${path}`
          : `cannot read ${what} file ${path}: ${(e as Error).message}`
      )
  })

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

const loadPrivateKey = (path: string, what: string) =>
  Effect.flatMap(readText(path, what), (pem) =>
    Effect.try({
      try: () => createPrivateKey(pem),
      // The key's text never goes into the message.
      catch: () => identityError(`${what} file ${path} does not hold a PEM private key (encrypted keys are not supported)`)
    }))

const loadX509 = (certFile: string, keyFile: string) =>
  Effect.gen(function*() {
    const chainPem = yield* readText(certFile, "TLS certificate")
    const blocks = chainPem.match(PEM_CERTIFICATE) ?? []
    const leafPem = blocks[0]
    if (leafPem === undefined) return yield* identityError(`TLS certificate file ${certFile} holds no PEM certificate`)
    const leaf = yield* Effect.try({
      try: () => new X509Certificate(leafPem),
      catch: () => identityError(`TLS certificate file ${certFile} holds an invalid certificate`)
    })
    const key = yield* loadPrivateKey(keyFile, "TLS private key")
    if (!leaf.checkPrivateKey(key)) {
      return yield* identityError(`TLS private key ${keyFile} does not match the certificate ${certFile}`)
    }
    return {
      certificatePem: blocks.join("\n") + "\n",
      privateKeyPem: Redacted.make(key.export({ format: "pem", type: "pkcs8" }).toString()),
      fingerprint: Option.getOrThrow(fingerprint(leaf.raw))
    } satisfies TlsCredentials
  })

/**
 * Turn an identity into what the TLS stack presents. Fails with `EndpointError` (reason `Identity`) and a message
 * naming the file for a missing or unreadable file, an invalid certificate or key, or a key that does not match its
 * certificate.
 */
export const load: (identity: TlsIdentity) => Effect.Effect<TlsCredentials, EndpointError.EndpointError> = Effect.fn(
  "Tls.load"
)((identity: TlsIdentity) =>
  TlsIdentity.$match(identity, {
    RawKey: ({ seed }) => selfSignedEd25519(Redacted.value(seed)),
    X509: ({ certFile, keyFile }) => loadX509(certFile, keyFile),
    SelfSigned: () => selfSignedEd25519(randomBytes(32))
  })
)

/** A `RawKey` identity from a PEM (PKCS#8) Ed25519 private key file. */
export const rawKeyFromPemFile = (path: string): Effect.Effect<TlsIdentity, EndpointError.EndpointError> =>
  Effect.flatMap(loadPrivateKey(path, "Ed25519 identity key"), (key) =>
    key.asymmetricKeyType === "ed25519"
      ? Effect.succeed(RawKey(Buffer.from(key.export({ format: "jwk" }).d ?? "", "base64url")))
      : identityError(`identity key file ${path} holds a ${key.asymmetricKeyType ?? "unknown"} key, not Ed25519`))
