/**
 * The README's SSH section, kept true: its config files decode, and its one-liner for an OpenSSH key's peer
 * fingerprint gives the fingerprint the node resolves.
 */
import { expect, it } from "@effect/vitest"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Keys from "../../../src/layers/ssh/Keys.js"
import * as Config from "../../../src/schema/Config.js"
import * as Tls from "../../../src/services/Tls.js"

const readme = fs.readFileSync(path.join(import.meta.dirname, "../../../README.md"), "utf8")
const section = readme.slice(readme.indexOf("<!-- section:ssh -->"), readme.indexOf("<!-- /section:ssh -->"))

it("the SSH section's config files are valid configs that serve SSH", () => {
  const configs = [...section.matchAll(/echo '(\{.*\})' > box\/config\.json/g)].map((m) => m[1]!)
  expect(configs.length).toBeGreaterThanOrEqual(2)
  for (const text of configs) {
    const decoded = Config.decode(text)
    if (decoded._tag === "Left") throw new Error(decoded.left)
    expect(decoded.right.ssh).toBeDefined()
  }
})

it("the SSH section's one-liner turns an OpenSSH public key file into the peer fingerprint the node resolves", () => {
  const script = /KEY=\$\(node -pe '(.*)'\)/.exec(section)?.[1]
  expect(script).toBeDefined()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "alknet-readme-ssh-"))
  try {
    const key = Keys.fromSeed(new Uint8Array(32).fill(5))
    fs.writeFileSync(path.join(dir, "id_ops.pub"), `${key.publicKeyLine} someone@host\n`)
    const printed = execFileSync(process.execPath, ["-pe", script!], { cwd: dir, encoding: "utf8" }).trim()
    expect(printed).toBe(Tls.ed25519Fingerprint(key.publicKey))
    expect(printed).toBe(Keys.alknetFingerprintOfBlob(Keys.publicKeyBlob(key.publicKey)))
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
