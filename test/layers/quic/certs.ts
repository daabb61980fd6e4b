/**
 * Test certificates: a throwaway CA and a leaf it signs (ECDSA P-256), written as PEM files into a temp dir.
 */
import "reflect-metadata"
import * as x509 from "@peculiar/x509"
import { webcrypto } from "node:crypto"
import type { webcrypto as WebCrypto } from "node:crypto"
import { mkdtemp, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect } from "effect"

const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const
const day = 24 * 60 * 60 * 1000

const keyPem = async (key: WebCrypto.CryptoKey) =>
  x509.PemConverter.encode(await webcrypto.subtle.exportKey("pkcs8", key), "PRIVATE KEY")

const generateKeys = () => webcrypto.subtle.generateKey(algorithm, true, ["sign", "verify"]) as Promise<WebCrypto.CryptoKeyPair>

export interface CaFiles {
  readonly dir: string
  readonly caPem: string
  /** The leaf certificate (for DNS name "localhost"), its key, and a key that does not match it. */
  readonly certFile: string
  readonly keyFile: string
  readonly otherKeyFile: string
  readonly leafDer: Uint8Array
}

/** A CA, a leaf for "localhost" signed by it, and an unrelated key, in a temp dir removed when the scope closes. */
export const caFiles = Effect.acquireRelease(
  Effect.promise(async (): Promise<CaFiles> => {
    const dir = await mkdtemp(join(tmpdir(), "alknet-tls-"))
    const now = Date.now()
    const caKeys = await generateKeys()
    const ca = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: "01",
      name: "CN=alknet test CA",
      notBefore: new Date(now - day),
      notAfter: new Date(now + day),
      signingAlgorithm: algorithm,
      keys: caKeys,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)
      ]
    })
    const leafKeys = await generateKeys()
    const leaf = await x509.X509CertificateGenerator.create({
      serialNumber: "02",
      subject: "CN=localhost",
      issuer: ca.subject,
      notBefore: new Date(now - day),
      notAfter: new Date(now + day),
      signingAlgorithm: algorithm,
      publicKey: leafKeys.publicKey,
      signingKey: caKeys.privateKey,
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: "dns", value: "localhost" }])]
    })
    const files = {
      dir,
      caPem: ca.toString("pem"),
      certFile: join(dir, "leaf.crt"),
      keyFile: join(dir, "leaf.key"),
      otherKeyFile: join(dir, "other.key"),
      leafDer: new Uint8Array(leaf.rawData)
    }
    await writeFile(files.certFile, leaf.toString("pem"))
    await writeFile(files.keyFile, await keyPem(leafKeys.privateKey))
    await writeFile(files.otherKeyFile, await keyPem((await generateKeys()).privateKey))
    return files
  }),
  (files) => Effect.promise(() => rm(files.dir, { recursive: true, force: true }))
)
