/**
 * A stock OpenSSH client (`ssh` from openssh-client; `.ci/run` installs it when missing) against the plain TCP
 * listener (`ssh.listen`), with its own key, listed as a peer's fingerprint.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import type { Scope } from "effect"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Keys from "../../../src/layers/ssh/Keys.js"
import * as SshServer from "../../../src/layers/ssh/SshServer.js"
import * as IdentityStore from "../../../src/services/IdentityStore.js"

interface Ran {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Run a program without blocking this process's event loop (the server under test runs in it). */
const exec = (file: string, args: ReadonlyArray<string>): Effect.Effect<Ran> =>
  Effect.async<Ran>((resume) => {
    const child = execFile(file, [...args], { encoding: "utf8" }, (error, stdout, stderr) =>
      resume(Effect.succeed({ code: error === null ? 0 : (child.exitCode ?? null), stdout, stderr })))
    child.stdin?.end()
  })

const tempDir: Effect.Effect<string, never, Scope.Scope> = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "alknet-openssh-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

/** A fresh OpenSSH Ed25519 key pair in `dir`: its file and the alknet fingerprint of its public key. */
const userKey = (dir: string, name: string) =>
  Effect.gen(function*() {
    const file = path.join(dir, name)
    const made = yield* exec("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", file])
    expect(made.code, made.stderr).toBe(0)
    const blob = Buffer.from(fs.readFileSync(`${file}.pub`, "utf8").split(" ")[1]!, "base64")
    return { file, fingerprint: Keys.alknetFingerprintOfBlob(blob)! }
  })

describe("SSH over plain TCP with OpenSSH", () => {
  it.scopedLive("ssh runs a command with a key whose fingerprint is a peer's; the host key is checked; others refused", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const alice = yield* userKey(dir, "alice")
      const mallory = yield* userKey(dir, "mallory")
      const store = yield* IdentityStore.makeMemory()
      yield* store.putPeer({
        peer_id: "alice",
        fingerprints: [alice.fingerprint],
        scopes: [SshServer.EXEC_SCOPE],
        resources: {},
        enabled: true
      })
      const hostKey = Keys.fromSeed(new Uint8Array(32).fill(42))
      const bound = yield* SshServer.listen({
        hostKey,
        resolve: (fingerprint) => store.resolveFingerprint(fingerprint).pipe(Effect.map(Option.map((i) => i)))
      })
      const knownHosts = path.join(dir, "known_hosts")
      fs.writeFileSync(knownHosts, `[127.0.0.1]:${bound.port} ${hostKey.publicKeyLine}\n`)
      const wrongHosts = path.join(dir, "wrong_hosts")
      fs.writeFileSync(wrongHosts, `[127.0.0.1]:${bound.port} ${Keys.fromSeed(new Uint8Array(32).fill(1)).publicKeyLine}\n`)

      const ssh = (key: string, hosts: string, ...rest: ReadonlyArray<string>) =>
        exec("ssh", [
          "-F", "/dev/null",
          "-i", key,
          "-o", "IdentitiesOnly=yes",
          "-o", "BatchMode=yes",
          "-o", "StrictHostKeyChecking=yes",
          "-o", `UserKnownHostsFile=${hosts}`,
          "-o", "LogLevel=ERROR",
          "-p", String(bound.port),
          "alice@127.0.0.1",
          ...rest
        ])

      const ran = yield* ssh(alice.file, knownHosts, "echo from-openssh; echo oops >&2; exit 4")
      expect(ran).toMatchObject({ code: 4, stdout: "from-openssh\n", stderr: "oops\n" })

      // A key no peer lists, and a host key that is not the one known: both refused by ssh (status 255).
      const refused = yield* ssh(mallory.file, knownHosts, "echo never")
      expect(refused.code).toBe(255)
      expect(refused.stdout).toBe("")
      expect(refused.stderr).toMatch(/Permission denied \(publickey\)/)
      const spoofed = yield* ssh(alice.file, wrongHosts, "echo never")
      expect(spoofed.code).toBe(255)
      expect(spoofed.stdout).toBe("")
      expect(spoofed.stderr).toMatch(/HOST IDENTIFICATION HAS CHANGED|Host key verification failed/)

      // No shell or pty: an interactive login is refused; a command still runs after.
      const shell = yield* ssh(alice.file, knownHosts, "-tt")
      expect(shell.code).not.toBe(0)
      expect(shell.stderr).toMatch(/PTY allocation request failed|shell request failed/)
      expect(yield* ssh(alice.file, knownHosts, "echo", "again")).toMatchObject({ code: 0, stdout: "again\n" })
    }))
})
