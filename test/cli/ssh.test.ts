/**
 * `alknet ssh` as a user runs it: a node process (home A) serving SSH, whose config lists home B's key as a peer with
 * `ssh:exec`; the commands run in this process against it.
 */
import { expect, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as net from "node:net"
import * as Cli from "./cli.js"

class Shared extends Context.Tag("test/cli/ssh/Shared")<Shared, {
  readonly node: Cli.CliNode
  readonly peer: string
  readonly stranger: string
  readonly echoPort: number
}>() {}

/** A TCP server on 127.0.0.1:0 that echoes what it receives, for the scope's life. */
const echoServer = Effect.acquireRelease(
  Effect.async<net.Server>((resume) => {
    const server = net.createServer((socket) => socket.pipe(socket))
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
  }),
  (server) => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
).pipe(Effect.map((server) => (server.address() as net.AddressInfo).port))

const SharedLive = Layer.scoped(
  Shared,
  Effect.gen(function*() {
    const dir = yield* Cli.tempDir
    const [a, b, c] = yield* Effect.all(
      [Cli.initHomeInProcess(dir, "a"), Cli.initHomeInProcess(dir, "b"), Cli.initHomeInProcess(dir, "c")],
      { concurrency: "unbounded" }
    )
    const echoPort = yield* echoServer
    yield* Cli.writeConfig(a.home, {
      ssh: { forward: [`127.0.0.1:${echoPort}`] },
      peers: [{ peer_id: "b", fingerprints: [b.fingerprint], scopes: ["ssh:exec", "ssh:forward"] }]
    })
    const node = yield* Cli.startNode(a.home)
    return { node, peer: b.home, stranger: c.home, echoPort }
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

  it.scoped("-L forwards a local port to an allow-listed destination until stopped", () =>
    Effect.gen(function*() {
      const { node, peer, echoPort } = yield* Shared
      const forward = yield* Cli.spawnRunning([
        "ssh", node.quic, "--fingerprint", node.fingerprint, "--home", peer, "-L", `0:127.0.0.1:${echoPort}`
      ])
      const [, port] = yield* forward.waitFor("stderr", /forwarding 127\.0\.0\.1:(\d+) to 127\.0\.0\.1:/)
      const echoed = yield* Effect.async<string>((resume) => {
        const socket = net.connect(Number(port), "127.0.0.1", () => socket.write("ping through alknet\n"))
        let text = ""
        socket.setEncoding("utf8")
        socket.on("data", (chunk: string) => {
          text += chunk
          if (text.endsWith("\n")) {
            socket.destroy()
            resume(Effect.succeed(text))
          }
        })
      })
      expect(echoed).toBe("ping through alknet\n")
      yield* forward.signal("SIGINT")
      expect(yield* forward.exited).toBe(130)
    }))
})
