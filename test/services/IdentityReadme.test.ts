/** The README's identity example, kept runnable (the database in a temp dir instead of /var/lib/alknet). */
import { expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { Config, IdentityProvider, IdentityStore, PeerEntry, SqliteStore } from "../../src/index.js"
import { tempDir } from "../shared/identity.js"

const example = (filename: string) => {
  // --- README example (section "identity") ---
  const worker = `ed25519:${"3b".repeat(32)}` // the peer's Ed25519 public key, hex

  const program = Effect.gen(function*() {
    const store = yield* IdentityStore.IdentityStore
    yield* store.putPeer(PeerEntry.make({
      peer_id: "worker-1",
      fingerprints: [worker], // several allowed: Ed25519 and X.509 (`SHA256:<hex of the cert DER>`)
      scopes: ["container:exec"],
      resources: { container: ["exec", "read"] }
    }))
    const { entry, token } = yield* store.createApiKey({ scopes: ["read"], description: "CI" }) // token shown once

    const identities = yield* IdentityProvider.IdentityProvider // what the endpoint and the engine use
    const byKey = yield* identities.resolveFingerprint(worker) // Some({ id: "worker-1", scopes, resources })
    const byToken = yield* identities.resolveToken(token) // Some({ id: entry.prefix, scopes: ["read"], resources: {} })
    return { byKey, byToken, prefix: entry.prefix }
  }).pipe(Effect.provide(SqliteStore.layer({ filename }))) // or IdentityStore.layerMemory()
  // --- end of README example ---
  return program
}

it.scoped("the README identity example runs", () =>
  Effect.gen(function*() {
    const { byKey, byToken, prefix } = yield* example(path.join(yield* tempDir, "alknet.db"))
    expect(Option.getOrThrow(byKey)).toEqual({
      id: "worker-1",
      scopes: ["container:exec"],
      resources: { container: ["exec", "read"] }
    })
    expect(Option.getOrThrow(byToken)).toEqual({ id: prefix, scopes: ["read"], resources: {} })
  }))

it("the README's config file example is a valid config", () => {
  const readme = fs.readFileSync(path.join(import.meta.dirname, "../../README.md"), "utf8")
  const section = readme.slice(readme.indexOf("<!-- section:identity -->"), readme.indexOf("<!-- /section:identity -->"))
  const json = /```json\n([\s\S]*?)```/.exec(section)?.[1]
  expect(json).toBeDefined()
  const decoded = Config.decode(json!)
  expect(decoded._tag === "Left" ? decoded.left : "valid").toBe("valid")
})
