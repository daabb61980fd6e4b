/**
 * `alknet ssh` as a user runs it: a node process (home A) serving SSH, whose config lists home B's key as a peer with
 * `ssh:exec`; the commands run in this process against it.
 */
import { expect, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as Cli from "./cli.js"

class Shared extends Context.Tag("test/cli/ssh/Shared")<Shared, {
  readonly node: Cli.CliNode
  readonly peer: string
  readonly stranger: string
}>() {}

const SharedLive = Layer.scoped(
  Shared,
  Effect.gen(function*() {
    const dir = yield* Cli.tempDir
    const [a, b, c] = yield* Effect.all(
      [Cli.initHomeInProcess(dir, "a"), Cli.initHomeInProcess(dir, "b"), Cli.initHomeInProcess(dir, "c")],
      { concurrency: "unbounded" }
    )
    yield* Cli.writeConfig(a.home, {
      ssh: {},
      peers: [{ peer_id: "b", fingerprints: [b.fingerprint], scopes: ["ssh:exec"] }]
    })
    const node = yield* Cli.startNode(a.home)
    return { node, peer: b.home, stranger: c.home }
  })
)

layer(SharedLive, { excludeTestServices: true, timeout: "5 minutes" })("alknet ssh", (it) => {
  it.effect("runs a command: its stdout, stderr and exit status come through; stdin goes to it", () =>
    Effect.gen(function*() {
      const { node, peer } = yield* Shared
      const target = [node.quic, "--fingerprint", node.fingerprint, "--home", peer]
      const hostKey = yield* Cli.runInProcess(["ssh", "host-key", "--home", node.home])
      expect(hostKey.code, hostKey.stderr).toBe(0)
      const [line, fingerprint] = hostKey.stdout.trim().split("\n")
      expect(line).toMatch(/^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI[A-Za-z0-9+/]+=* alknet-host$/)
      expect(fingerprint).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/)

      const [ran, piped, pinned, wrongPin] = yield* Cli.runAllInProcess(
        ["ssh", ...target, "--", "echo out; echo err >&2; exit 7"],
        ["ssh", ...target, "--", "tr", "a-z", "A-Z"],
        ["ssh", ...target, "--host-key", fingerprint!, "--", "echo", "pinned"],
        ["ssh", ...target, "--host-key", `SHA256:${"A".repeat(43)}`, "--", "echo", "never"]
      )
      expect(ran).toEqual({ code: 7, stdout: "out\n", stderr: "err\n" })
      expect(piped.code, piped.stderr).toBe(0)
      expect(piped.stdout).toBe("")
      expect(pinned).toMatchObject({ code: 0, stdout: "pinned\n" })
      expect(wrongPin.code).toBe(16)
      expect(wrongPin.stderr).toContain(fingerprint)
      expect(wrongPin.stdout).toBe("")

      const upper = yield* Cli.runInProcess(["ssh", ...target, "--", "tr", "a-z", "A-Z"], { stdin: "hello\n" })
      expect(upper).toMatchObject({ code: 0, stdout: "HELLO\n" })
    }))

  it.effect("refuses a key that is no peer's, a node's TLS key that is not pinned, and a missing command", () =>
    Effect.gen(function*() {
      const { node, stranger, peer } = yield* Shared
      const [unknown, unpinned, noCommand] = yield* Cli.runAllInProcess(
        ["ssh", node.quic, "--fingerprint", node.fingerprint, "--home", stranger, "--", "echo", "hi"],
        ["ssh", node.quic, "--home", peer, "--", "echo", "hi"],
        ["ssh", node.quic, "--fingerprint", node.fingerprint, "--home", peer]
      )
      expect(unknown.code).toBe(18)
      expect(Cli.errorLines(unknown.stderr)).toEqual([expect.stringMatching(/^alknet: the node refused our key SHA256:/)])
      expect(unpinned.code).toBe(17)
      expect(noCommand.code).toBe(2)
    }))
})
