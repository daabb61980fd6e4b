/**
 * `alknet init`, `credential`, a node whose home keeps no mnemonic, and the bad inputs that need no running node —
 * each a separate process, as a user runs them.
 */
import { expect, layer } from "@effect/vitest"
import { Context, Effect, Layer, Redacted } from "effect"
import * as dgram from "node:dgram"
import * as fs from "node:fs/promises"
import * as net from "node:net"
import * as path from "node:path"
import * as Tls from "../../src/services/Tls.js"
import * as Vault from "../../src/services/Vault.js"
import * as Cli from "./cli.js"

const ABOUT = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"

class Homes extends Context.Tag("test/cli/Homes")<Homes, {
  readonly dir: string
  /** `init --words 12`: its home and what init printed. */
  readonly stored: { readonly home: string; readonly result: Cli.Result }
  /** `init --no-store-mnemonic --json`. */
  readonly unstored: { readonly home: string; readonly fingerprint: string; readonly mnemonic: string }
}>() {}

const HomesLive = Layer.scoped(
  Homes,
  Effect.gen(function*() {
    const dir = yield* Cli.tempDir
    const home = path.join(dir, "stored")
    const [result, unstored] = yield* Effect.all([
      Cli.run(["init", "--home", home, "--words", "12"]),
      Cli.initHome(dir, "unstored", "--no-store-mnemonic")
    ], { concurrency: "unbounded" })
    return { dir, stored: { home, result }, unstored: { ...unstored, mnemonic: unstored.mnemonic! } }
  })
)

/** The node fingerprint a mnemonic gives, computed in-process. */
const fingerprintOf = (mnemonic: string) =>
  Effect.gen(function*() {
    const vault = yield* Vault.Vault
    yield* vault.unlock(Redacted.make(mnemonic))
    return Tls.ed25519Fingerprint((yield* Vault.nodeIdentity).publicKey)
  }).pipe(Effect.provide(Vault.layer))

/** A free loopback port: bound, then released. */
const freeTcpPort = Effect.async<number>((resume) => {
  const server = net.createServer().listen(0, "127.0.0.1", () => {
    const { port } = server.address() as net.AddressInfo
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** A UDP port held for the scope's life. */
const busyUdpPort = Effect.acquireRelease(
  Effect.async<dgram.Socket>((resume) => {
    const socket = dgram.createSocket("udp4")
    socket.bind(0, "127.0.0.1", () => resume(Effect.succeed(socket)))
  }),
  (socket) => Effect.sync(() => socket.close())
)

const { errorLines, lastLine } = Cli

layer(HomesLive, { excludeTestServices: true, timeout: "90 seconds" })("alknet homes, credentials and bad input", (it) => {
  it.effect("init prints the fingerprint and the mnemonic once, keeps it 0600, and refuses an existing home", () =>
    Effect.gen(function*() {
      const { dir, stored, unstored } = yield* Homes
      expect(stored.result.code, stored.result.stderr).toBe(0)
      const out = stored.result.stdout
      const words = /^ {4}([a-z ]+)$/m.exec(out)![1]!
      expect(words.split(" ")).toHaveLength(12)
      expect(out).toContain("mnemonic (12 words), shown only this once:")
      expect(out).toContain("Back it up now")
      const fingerprint = /^fingerprint (ed25519:[0-9a-f]{64})$/m.exec(out)![1]!
      expect(fingerprint).toBe(yield* fingerprintOf(words))
      const file = path.join(stored.home, "mnemonic")
      expect((yield* Effect.promise(() => fs.stat(file))).mode & 0o777).toBe(0o600)
      expect((yield* Effect.promise(() => fs.readFile(file, "utf8"))).trim()).toBe(words)

      expect(unstored.fingerprint).toBe(yield* fingerprintOf(unstored.mnemonic))
      expect(yield* Effect.promise(() => fs.access(path.join(unstored.home, "mnemonic")).then(() => true, () => false)))
        .toBe(false)

      const [again, given, badWord, badChecksum] = yield* Effect.all([
        Cli.run(["init", "--home", stored.home]),
        Cli.run(["init", "--home", path.join(dir, "given"), "--mnemonic-stdin", "--json"], { stdin: `${ABOUT}\n` }),
        Cli.run(["init", "--home", path.join(dir, "bad1"), "--mnemonic-stdin"], { stdin: `${ABOUT.replace("about", "abuot")}\n` }),
        Cli.run(["init", "--home", path.join(dir, "bad2"), "--mnemonic-stdin"], { stdin: `${ABOUT.replace("about", "abandon")}\n` })
      ], { concurrency: "unbounded" })
      expect(again.code).toBe(5)
      expect(again.stderr.trim()).toBe(`alknet: ${stored.home} is already an alknet home; refusing to overwrite it`)
      expect(given.code, given.stderr).toBe(0)
      const created = JSON.parse(given.stdout) as Record<string, unknown>
      expect(created.fingerprint).toBe(yield* fingerprintOf(ABOUT))
      expect(created).not.toHaveProperty("mnemonic") // given, not generated: never printed
      expect(badWord.code).toBe(7)
      expect(badWord.stderr.trim()).toBe("alknet: invalid mnemonic: word 12 is not in the BIP39 English word list")
      expect(badChecksum.code).toBe(7)
      expect(badChecksum.stderr.trim()).toMatch(/^alknet: invalid mnemonic: the checksum does not match/)
      expect(badWord.stderr + badChecksum.stderr).not.toContain("abandon")
      yield* Effect.promise(() => fs.access(path.join(dir, "bad1")).then(() => expect.fail("bad1 was created"), () => undefined))
    }))

  it.effect("credential put / get round trip and rotate; the store holds only ciphertext", () =>
    Effect.gen(function*() {
      const { stored } = yield* Homes
      const home = ["--home", stored.home]
      const put = yield* Cli.run(["credential", "put", ...home, "github"], { stdin: "ghp_s3cret value\n" })
      expect(put.code, put.stderr).toBe(0)
      expect(put.stdout.trim()).toBe("stored credential github (key_version 2)")

      const [hidden, revealed] = yield* Cli.runAll(
        ["credential", "get", ...home, "github"],
        ["credential", "get", ...home, "github", "--reveal"]
      )
      expect(hidden.stdout.trim()).toBe("github: key_version 2, decrypts; value hidden (--reveal prints it)")
      expect(hidden.stdout + hidden.stderr).not.toContain("s3cret")
      expect(revealed.stdout).toBe("ghp_s3cret value\n")

      const rotated = yield* Cli.run(["credential", "rotate", ...home, "github"])
      expect(rotated.code, rotated.stderr).toBe(0)
      expect(rotated.stdout.trim()).toBe("rotated credential github: key_version 2 -> 3")
      const [after, listed] = yield* Cli.runAll(
        ["credential", "get", ...home, "github", "--reveal", "--json"],
        ["credential", "list", ...home, "--json"]
      )
      expect(JSON.parse(after.stdout)).toEqual({ provider: "github", key_version: 3, value: "ghp_s3cret value" })
      expect(JSON.parse(listed.stdout)).toEqual([{ provider: "github", key_version: 3 }])
      const database = yield* Effect.promise(() => fs.readFile(path.join(stored.home, "data", "alknet.db")))
      expect(database.includes("s3cret")).toBe(false)
    }))

  it.effect("a home without a stored mnemonic reads it from stdin: credentials and the node", () =>
    Effect.gen(function*() {
      const { unstored } = yield* Homes
      const home = ["--home", unstored.home]
      const put = yield* Cli.run(["credential", "put", ...home, "api"], { stdin: `${unstored.mnemonic}\ntoken-123\n` })
      expect(put.code, put.stderr).toBe(0)
      const [right, wrong, none] = yield* Effect.all([
        Cli.run(["credential", "get", ...home, "api", "--reveal"], { stdin: `${unstored.mnemonic}\n` }),
        Cli.run(["credential", "get", ...home, "api", "--reveal"], { stdin: `${ABOUT}\n` }),
        Cli.run(["credential", "get", ...home, "api", "--reveal"])
      ], { concurrency: "unbounded" })
      expect(right.stdout).toBe("token-123\n")
      expect(wrong.code).toBe(8)
      expect(wrong.stderr.trim()).toMatch(/^alknet: decryption failed: /)
      expect(none.code).toBe(7)
      expect(none.stderr.trim()).toMatch(/^alknet: expected the mnemonic \(.* keeps none\) on stdin, got nothing$/)

      yield* Effect.scoped(Effect.gen(function*() {
        const busy = yield* busyUdpPort
        // One node per home (it holds a lock while it runs): the failing starts come first, in this process.
        const badMnemonic = yield* Cli.runInProcess(["node", ...home, "--listen", "127.0.0.1:0"], {
          stdin: "not a mnemonic at all\n"
        })
        const inUse = yield* Cli.runInProcess(["node", ...home, "--listen", `127.0.0.1:${(busy.address()).port}`], {
          stdin: `${unstored.mnemonic}\n`
        })
        const node = yield* Cli.startNode(unstored.home, [], { stdin: `${unstored.mnemonic}\n` })
        expect(node.fingerprint).toBe(unstored.fingerprint)
        expect(badMnemonic.code).toBe(7)
        expect(badMnemonic.stderr.trim()).toMatch(/^alknet: invalid mnemonic: /)
        expect(inUse.code).toBe(12)
        expect(errorLines(inUse.stderr)).toEqual([lastLine(inUse.stderr)])
        expect(lastLine(inUse.stderr)).toMatch(/^alknet: cannot listen on quic:\/\/127\.0\.0\.1:\d+: the UDP port is in use/)
        yield* node.signal("SIGINT")
        expect(yield* node.exited).toBe(0)
      }))
    }))

  it.effect("every bad input gets one line and its own exit code", () =>
    Effect.gen(function*() {
      const { dir } = yield* Homes
      const corrupt = path.join(dir, "corrupt")
      yield* Effect.promise(() => fs.mkdir(corrupt))
      yield* Effect.promise(() => fs.writeFile(path.join(corrupt, "config.json"), `{"listen": "127.0.0.1:4433", "peers": [{}]}`))
      const closed = yield* freeTcpPort
      const results = yield* Cli.runAll(
        ["peer", "list", "--home", path.join(dir, "missing")],
        ["token", "list", "--home", corrupt],
        ["call", "tcp://127.0.0.1:1", "node/info"],
        ["call", `ws://127.0.0.1:${closed}`, "node/info", "--retries", "1"],
        ["call", `quic://127.0.0.1:${closed}`, "node/info", "--connect-timeout", "300ms", "--retries", "0"],
        ["peer", "add", "--home", path.join(dir, "missing")],
        ["frobnicate"],
        ["peer", "list", "--home", path.join(dir, "missing"), "--verbose"]
      )
      const [missing, badConfig, badAddress, refused, unreachable, noId, unknown, verbose] = results
      const expectOneLine = (result: Cli.Result, code: number, message: RegExp) => {
        expect(result.code, result.stderr).toBe(code)
        expect(result.stdout).toBe("")
        expect(errorLines(result.stderr)).toEqual([lastLine(result.stderr)])
        expect(lastLine(result.stderr)).toMatch(message)
      }
      expectOneLine(missing, 4, /^alknet: no alknet home at .*missing \(no config\.json\); create one with: alknet init/)
      expectOneLine(badConfig, 6, /^alknet: invalid .*config\.json: peers\[0\]\.peer_id: /)
      expectOneLine(badAddress, 14, /^alknet: invalid address "tcp:\/\/127\.0\.0\.1:1": unknown scheme/)
      expect(refused.code).toBe(15)
      expect(refused.stderr).toContain("retrying in 500ms (attempt 2 of 2)")
      expect(lastLine(refused.stderr)).toMatch(/^alknet: cannot connect to 127\.0\.0\.1:\d+: .*ECONNREFUSED/)
      expectOneLine(unreachable, 15, /^alknet: timed out connecting to 127\.0\.0\.1:\d+$/)
      expect(noId.code).toBe(2)
      expect(noId.stderr).toContain("--id")
      expect(unknown.code).toBe(2)
      expect(lastLine(unknown.stderr)).toMatch(/^alknet: unknown command 'frobnicate'; commands: init, node, call/)
      expect(verbose.code).toBe(4)
      expect(verbose.stderr.trim().split("\n").length).toBeGreaterThan(1)
      for (const result of results.slice(0, -1)) expect(result.stderr).not.toMatch(/^\s+at /m)
      expect(verbose.stderr).toMatch(/^\s+at /m) // the cause, only with --verbose
    }))
})
