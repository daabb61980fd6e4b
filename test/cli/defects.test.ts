/**
 * The CLI's rough edges (issue #11 "CLI defects", #20 item 6), each driven as a user meets it. Most commands run
 * in-process (`Cli.runInProcess`, nodes included); a child process only where the process boundary is the point: a
 * reader closing the pipe (EPIPE), and a node killed with SIGKILL that leaves its lock and run file behind. Waits are
 * on conditions (a line on stderr, a process exit); the timeouts only stop a hang.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { spawn } from "node:child_process"
import * as dgram from "node:dgram"
import * as fs from "node:fs/promises"
import * as Http from "node:http"
import * as path from "node:path"
import * as Io from "../../src/cli/io.js"
import * as Program from "../../src/cli/program.js"
import { listen } from "../shared/http.js"
import * as Cli from "./cli.js"

const { errorLines, lastLine } = Cli

/** `alknet init` in-process: the home and its fingerprint. */
const initHome = (dir: string, name: string) =>
  Effect.gen(function*() {
    const home = path.join(dir, name)
    const result = yield* Cli.runInProcess(["init", "--home", home, "--words", "12", "--json"])
    expect(result.code, result.stderr).toBe(0)
    return { home, fingerprint: (JSON.parse(result.stdout) as { fingerprint: string }).fingerprint }
  })

/** `alknet node` in-process, for the scope's life: its output, its addresses, and a way to stop it. */
const startNode = (home: string, flags: ReadonlyArray<string> = []) =>
  Effect.gen(function*() {
    const { stdio, text } = Cli.captureStdio()
    const listeners = new Set<() => void>()
    const notify = () => {
      for (const f of listeners) f()
    }
    const watched: Io.Stdio = {
      ...stdio,
      out: (t) => {
        stdio.out(t)
        notify()
      },
      err: (t) => {
        stdio.err(t)
        notify()
      }
    }
    let exitCode: number | undefined
    // Interrupted when the scope closes (SIGINT for a node in its own process).
    const fiber = yield* Effect.forkScoped(
      Effect.tap(
        Program.run(["node", "alknet", "node", "--home", home, ...flags], { stdio: watched, env: {} }),
        (code) =>
          Effect.sync(() => {
            exitCode = code
            notify()
          })
      )
    )
    /** Wait until stderr (all of it so far) matches `pattern` `times` times; fails if the node ended first. */
    const waitFor = (pattern: RegExp, times = 1) =>
      Effect.async<void, Error>((resume) => {
        const check = () => {
          const count = [...text.stderr.matchAll(new RegExp(pattern.source, "g"))].length
          if (count >= times) {
            listeners.delete(check)
            resume(Effect.void)
          } else if (exitCode !== undefined) {
            listeners.delete(check)
            resume(Effect.fail(new Error(`node exited ${exitCode} before ${pattern}:\n${text.stderr}`)))
          }
        }
        listeners.add(check)
        check()
        return Effect.sync(() => void listeners.delete(check))
      }).pipe(Effect.orDie)
    yield* waitFor(/alknet node: serving/)
    const lines = text.stdout.trim().split("\n")
    const first = /^alknet node (\S+) listening (quic:\/\/\S+)$/.exec(lines[0] ?? "")!
    const ws = lines.map((l) => /listening (wss?:\/\/\S+)$/.exec(l)?.[1]).find((a) => a !== undefined)
    return {
      home,
      fingerprint: first[1]!,
      quic: first[2]!,
      ws,
      stderr: () => text.stderr,
      waitFor,
      stop: Fiber.interrupt(fiber)
    }
  })

const udpSocket = Effect.acquireRelease(
  Effect.async<dgram.Socket>((resume) => {
    const socket = dgram.createSocket("udp4")
    socket.bind(0, "127.0.0.1", () => resume(Effect.succeed(socket)))
  }),
  (socket) => Effect.sync(() => socket.close())
)

/** The pid of a process that has exited (nothing runs under it now). */
const deadPid = Effect.async<number>((resume) => {
  const child = spawn(process.execPath, ["-e", ""], { stdio: "ignore" })
  child.once("exit", () => resume(Effect.succeed(child.pid!)))
})

const expectOneLine = (result: Cli.Result, code: number, message: RegExp) => {
  expect(result.code, result.stderr).toBe(code)
  expect(result.stdout).toBe("")
  expect(errorLines(result.stderr)).toEqual([lastLine(result.stderr)])
  expect(lastLine(result.stderr)).toMatch(message)
}

describe("alknet command line: options, subcommands, help (in-process)", () => {
  it.live("an unknown or misspelled option is named as such wherever it stands, with the nearest one", () =>
    Effect.gen(function*() {
      const address = "quic://127.0.0.1:1"
      const bogus = yield* Cli.runInProcess(["call", address, "node/ping", "--bogus"])
      expectOneLine(bogus, 2, /^alknet: unknown option --bogus for alknet call; see alknet call --help$/)
      const typo = yield* Cli.runInProcess(["call", address, "node/ping", "--fingerprnt", "ed25519:00"])
      expectOneLine(typo, 2, /^alknet: unknown option --fingerprnt for alknet call \(did you mean --fingerprint\?\)/)
      const before = yield* Cli.runInProcess(["call", "--fingerprnt", "x", address, "node/ping"])
      expectOneLine(before, 2, /unknown option --fingerprnt .*did you mean --fingerprint/)
      const noValue = yield* Cli.runInProcess(["status", "--home"])
      expectOneLine(noValue, 2, /^alknet: --home needs a value; see alknet status --help$/)
      // A value that looks like an option is still the option's value.
      const value = yield* Cli.runInProcess(["token", "create", "--home", "/nonexistent-alknet", "--description", "--json"])
      expectOneLine(value, 4, /^alknet: no alknet home at \/nonexistent-alknet/)
    }))

  it.live("a bad subcommand names its parent's subcommands; --verbose adds no raw error", () =>
    Effect.gen(function*() {
      const ad = yield* Cli.runInProcess(["peer", "ad", "--id", "x"])
      expectOneLine(
        ad,
        2,
        /^alknet: unknown subcommand 'ad' of alknet peer \(did you mean 'add'\?\); its subcommands: add, update, remove, list, connect, disconnect$/
      )
      const token = yield* Cli.runInProcess(["token", "--home", "X"])
      expectOneLine(token, 2, /^alknet: alknet token needs a subcommand \(create, list, revoke\) before --home$/)
      const frob = yield* Cli.runInProcess(["--verbose", "frob"])
      expectOneLine(frob, 2, /^alknet: unknown command 'frob'; commands: init, node, call, subscribe, ls, schema, openapi, status, peer, token, credential, ssh$/)
      // @effect/cli's own parse errors carry the prefix too, and --verbose adds nothing to them.
      const missing = yield* Cli.runInProcess(["call", "quic://127.0.0.1:1", "--verbose"])
      expectOneLine(missing, 2, /^alknet: Missing argument <operation>$/)
    }))

  it.live("help: no colours off a terminal, no generic type lines, usage as `$ alknet …`, optional flags in brackets", () =>
    Effect.gen(function*() {
      const call = yield* Cli.runInProcess(["call", "--help"])
      expect(call.code).toBe(0)
      expect(call.stdout).not.toMatch(/\x1b\[/)
      expect(call.stdout).not.toContain("A user-defined piece of text")
      expect(call.stdout).toMatch(/^\$ alknet call \[--timeout DURATION\] .*\[--token-file PATH\].* <address> <operation> \[<json>\]$/m)
      const add = yield* Cli.runInProcess(["peer", "add", "--help"])
      expect(add.stdout).toMatch(/^\$ alknet peer add \[--home DIR\] --id ID \[--fingerprint FP\.\.\.\] \[--scope SCOPE\.\.\.\]/m)
      // On a colour terminal the help keeps its colours.
      const { stdio, text } = Cli.captureStdio()
      yield* Program.run(["node", "alknet", "call", "--help"], { stdio: { ...stdio, colors: { out: true, err: true } }, env: {} })
      expect(text.stdout).toMatch(/\x1b\[/)
      // NO_COLOR or a pipe: none.
      expect(Io.wantsColor(true, { NO_COLOR: "1" })).toBe(false)
      expect(Io.wantsColor(false, {})).toBe(false)
      expect(Io.wantsColor(true, {})).toBe(true)
    }))

  it.scopedLive("status: no home is exit 4; a run file whose node is gone is said at once (exit 19)", () =>
    Effect.gen(function*() {
      const dir = yield* Cli.tempDir
      const missing = yield* Cli.runInProcess(["status", "--home", path.join(dir, "nonexistent")])
      expectOneLine(missing, 4, /^alknet: no alknet home at /)
      const { home } = yield* initHome(dir, "h")
      const none = yield* Cli.runInProcess(["status", "--home", home])
      expectOneLine(none, 19, /^alknet: no node is running from .*\/h \(no .*node\.run\.json\)$/)
      const pid = yield* deadPid
      yield* Effect.promise(() =>
        fs.writeFile(
          path.join(home, "node.run.json"),
          JSON.stringify({ pid, fingerprint: "ed25519:" + "0".repeat(64), transports: [{ kind: "quic", address: "quic://127.0.0.1:9" }] })
        )
      )
      const stale = yield* Cli.runInProcess(["status", "--home", home])
      expectOneLine(stale, 19, new RegExp(`^alknet: no node is running from .*: its node \\(pid ${pid}\\) stopped without cleaning up`))
    }))

  it.scopedLive("--connect without a fingerprint is refused; rotate --to 1 says it cannot encrypt to version 1", () =>
    Effect.gen(function*() {
      const dir = yield* Cli.tempDir
      const { home } = yield* initHome(dir, "h")
      const unpinned = yield* Cli.runInProcess(["node", "--home", home, "--connect", "w1=quic://127.0.0.1:4501"])
      expectOneLine(unpinned, 2, /^alknet: --connect w1=quic:\/\/127\.0\.0\.1:4501: no fingerprint: give the peer as .*#FINGERPRINT/)
      const connect = yield* Cli.runInProcess(["peer", "connect", "--home", home, "quic://127.0.0.1:4501"])
      expect(connect.code).toBe(2)
      const put = yield* Cli.runInProcess(["credential", "put", "--home", home, "github"], { stdin: "ghp_x\n" })
      expect(put.code, put.stderr).toBe(0)
      const rotate = yield* Cli.runInProcess(["credential", "rotate", "--home", home, "github", "--to", "1"])
      expectOneLine(rotate, 2, /^alknet: --to 1: key version 1 is legacy \(password-based\) encryption, which this vault cannot encrypt to; use 2 or later$/)
      const put1 = yield* Cli.runInProcess(["credential", "put", "--home", home, "other", "--key-version", "1"], { stdin: "x" })
      expectOneLine(put1, 2, /^alknet: --key-version 1: key version 1 is legacy/)
    }))
})

describe("alknet against a node (in-process)", () => {
  it.scopedLive("subscribe on a query fails clearly over QUIC and WebSocket (exit 23); on a subscription it streams", () =>
    Effect.gen(function*() {
      const dir = yield* Cli.tempDir
      const { home } = yield* initHome(dir, "n")
      const node = yield* startNode(home, ["--listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0", "--demo"])
      const pin = ["--fingerprint", node.fingerprint]
      for (const address of [node.quic, node.ws!]) {
        const query = yield* Cli.runInProcess(["subscribe", address, "node/ping", ...pin])
        expectOneLine(query, 23, /^INVALID_OPERATION_TYPE: node\/ping is a query; use alknet call$/)
      }
      const unknown = yield* Cli.runInProcess(["subscribe", node.quic, "no/such", ...pin])
      expect(unknown.code).toBe(20)
      const ticks = yield* Cli.runInProcess(["subscribe", node.ws!, "demo/ticks", `{"count":2,"interval_ms":5}`, ...pin])
      expect(ticks.code, ticks.stderr).toBe(0)
      expect(ticks.stdout).toBe(`{"n":0}\n{"n":1}\n`)
    }), { timeout: 120_000 })

  it.scopedLive("tokens: --token-file and stdin; --token warns; a rejected token is said, never echoed (exit 21)", () =>
    Effect.gen(function*() {
      const dir = yield* Cli.tempDir
      const { home } = yield* initHome(dir, "n")
      const node = yield* startNode(home, ["--listen", "127.0.0.1:0", "--demo"])
      const pin = ["--fingerprint", node.fingerprint]
      const created = yield* Cli.runInProcess(["token", "create", "--home", home, "--scope", "demo"])
      expect(created.code, created.stderr).toBe(0)
      const token = created.stdout.trim()
      const prefix = token.slice(0, 8)
      const file = path.join(dir, "token")
      yield* Effect.promise(() => fs.writeFile(file, `${token}\n`, { mode: 0o600 }))

      const fromFile = yield* Cli.runInProcess(["call", node.quic, "demo/secret", "--token-file", file, ...pin])
      expect(fromFile.code, fromFile.stderr).toBe(0)
      expect(JSON.parse(fromFile.stdout)).toMatchObject({ caller: prefix })
      expect(fromFile.stderr).toBe("")
      // `-`: the token is the first line of stdin, the JSON input may follow it.
      const fromStdin = yield* Cli.runInProcess(
        ["call", node.quic, "demo/echo", "-", "--token-file", "-", ...pin],
        { stdin: `${token}\n{"hello":1}\n` }
      )
      expect(fromStdin.code, fromStdin.stderr).toBe(0)
      expect(JSON.parse(fromStdin.stdout)).toMatchObject({ echo: { hello: 1 } })
      const fromEnv = yield* Cli.runInProcess(["call", node.quic, "node/whoami", ...pin], { env: { ALKNET_TOKEN: token } })
      expect(JSON.parse(fromEnv.stdout)).toMatchObject({ identity: { id: prefix } })
      expect(fromEnv.stderr).toBe("")

      const literal = yield* Cli.runInProcess(["call", node.quic, "node/whoami", "--token", token, ...pin])
      expect(literal.code, literal.stderr).toBe(0)
      expect(literal.stderr).toMatch(/^alknet: warning: a token given with --token is visible to other users in the process list; use \$ALKNET_TOKEN or --token-file instead\n$/)
      const both = yield* Cli.runInProcess(["call", node.quic, "node/whoami", "--token", token, "--token-file", file, ...pin])
      expect(both.code).toBe(2)

      const revoked = yield* Cli.runInProcess(["token", "revoke", "--home", home, prefix])
      expect(revoked.code, revoked.stderr).toBe(0)
      const results = [
        yield* Cli.runInProcess(["call", node.quic, "node/whoami", ...pin], { env: { ALKNET_TOKEN: token } }),
        yield* Cli.runInProcess(["call", node.quic, "demo/secret", "--token-file", file, ...pin]),
        yield* Cli.runInProcess(["ls", node.quic, "--token-file", file, ...pin]),
        yield* Cli.runInProcess(["subscribe", node.quic, "demo/ticks", "--token-file", file, ...pin])
      ]
      for (const result of results) {
        expectOneLine(result, 21, /^FORBIDDEN: the token was rejected by the node$/)
        expect(result.stderr).not.toContain(token)
      }
      const garbage = yield* Cli.runInProcess(["call", node.quic, "demo/secret", ...pin], { env: { ALKNET_TOKEN: "alk_garbage" } })
      expectOneLine(garbage, 21, /^FORBIDDEN: the token was rejected by the node$/)
    }), { timeout: 120_000 })

  it.scopedLive("a second node on a served home is refused (exit 27); a taken port is said to be in use (exit 12)", () =>
    Effect.gen(function*() {
      const dir = yield* Cli.tempDir
      const [a, b] = [yield* initHome(dir, "a"), yield* initHome(dir, "b")]
      const node = yield* startNode(a.home, ["--listen", "127.0.0.1:0"])
      const second = yield* Cli.runInProcess(["node", "--home", a.home, "--listen", "127.0.0.1:0"])
      expectOneLine(second, 27, new RegExp(`^alknet: a node is already running from .*/a \\(pid ${process.pid}\\); stop it first`))
      // The first still serves, and still says so.
      const status = yield* Cli.runInProcess(["status", "--home", a.home])
      expect(status.code, status.stderr).toBe(0)
      expect(status.stdout).toContain(`listening ${node.quic}`)

      const busy = yield* udpSocket
      const port = busy.address().port
      const inUse = yield* Cli.runInProcess(["node", "--home", b.home, "--listen", `127.0.0.1:${port}`])
      expectOneLine(
        inUse,
        12,
        new RegExp(`^alknet: cannot listen on quic://127\\.0\\.0\\.1:${port}: the UDP port is in use \\(another node or program has it\\)`)
      )
      // Its lock went with it: the home is free.
      expect(yield* Effect.promise(() => fs.access(path.join(b.home, "node.lock")).then(() => true, () => false))).toBe(false)

      // The same for the gateway's own TCP port.
      const tcpPort = yield* Effect.map(listen(Http.createServer()), (url) => new URL(url).port)
      const httpInUse = yield* Cli.runInProcess(["node", "--home", b.home, "--listen", "127.0.0.1:0", "--http-listen", `127.0.0.1:${tcpPort}`])
      expectOneLine(
        httpInUse,
        12,
        new RegExp(`^alknet: cannot listen on http://127\\.0\\.0\\.1:${tcpPort}: the TCP port is in use .*; choose another with --http-listen$`)
      )
    }), { timeout: 120_000 })

  it.scopedLive("a head says when a peer connects, is lost and comes back; status shows no stale error", () =>
    Effect.gen(function*() {
      const dir = yield* Cli.tempDir
      const [w, h] = [yield* initHome(dir, "w"), yield* initHome(dir, "h")]
      const worker = yield* startNode(w.home, ["--listen", "127.0.0.1:0", "--demo"])
      const head = yield* startNode(h.home, ["--listen", "127.0.0.1:0", "--connect", `w1=${worker.quic}#${worker.fingerprint}`])
      const connected = /alknet node: peer w1 connected \(quic:\/\/127\.0\.0\.1:\d+, \d+ operations\)/
      yield* head.waitFor(connected)

      yield* worker.stop
      yield* head.waitFor(/alknet node: peer w1 lost: connection closed; reconnecting/)
      const away = yield* Cli.runInProcess(["status", "--home", h.home])
      expect(away.code, away.stderr).toBe(0)
      expect(away.stdout).toMatch(/^w1 +quic:\S+ +reconnecting \(\d+ attempts?\) +\d+ +external +connection closed$/m)

      const port = /:(\d+)$/.exec(worker.quic)![1]!
      yield* startNode(w.home, ["--listen", `127.0.0.1:${port}`, "--demo"])
      yield* head.waitFor(connected, 2)
      const back = yield* Cli.runInProcess(["status", "--home", h.home])
      expect(back.stdout).toMatch(/^w1 +quic:\S+ +connected +\d+ +external +-$/m)
      const json = yield* Cli.runInProcess(["status", "--home", h.home, "--json"])
      expect(JSON.parse(json.stdout).peers[0]).toMatchObject({ state: "connected", last_error: null })
    }), { timeout: 120_000 })
})

describe("alknet at the process boundary", () => {
  it.scopedLive("a reader that closes stdout ends `subscribe` quietly (exit 0) and the subscription is aborted", () =>
    Effect.gen(function*() {
      const dir = yield* Cli.tempDir
      const { home } = yield* initHome(dir, "n")
      const node = yield* startNode(home, ["--listen", "127.0.0.1:0", "--demo"])
      const sub = yield* Cli.spawnRunning(["subscribe", node.quic, "demo/ticks", `{"interval_ms":20}`, "--fingerprint", node.fingerprint])
      yield* sub.waitFor("stdout", /\{"n":0\}\n/)
      // `| head -1`: the reader goes away; the next write meets EPIPE.
      sub.child.stdout!.destroy()
      expect(yield* sub.exited).toBe(0)
      expect(sub.stderr()).not.toMatch(/EPIPE|Error|^\s+at /m)
      yield* node.waitFor(/demo: demo\/ticks interrupted after \d+ items?/)
    }), { timeout: 120_000 })

  it.scopedLive("a node killed with SIGKILL: status says it is gone, the next node takes its lock over", () =>
    Effect.gen(function*() {
      const dir = yield* Cli.tempDir
      const { home } = yield* initHome(dir, "n")
      const first = yield* Cli.startNode(home)
      const second = yield* Cli.runInProcess(["node", "--home", home, "--listen", "127.0.0.1:0"])
      expectOneLine(second, 27, new RegExp(`already running from .* \\(pid ${first.child.pid}\\)`))

      yield* first.signal("SIGKILL")
      yield* first.exited
      const status = yield* Cli.runInProcess(["status", "--home", home])
      expectOneLine(status, 19, new RegExp(`its node \\(pid ${first.child.pid}\\) stopped without cleaning up`))

      const next = yield* startNode(home, ["--listen", "127.0.0.1:0"])
      expect(next.stderr()).toContain(`was left by pid ${first.child.pid}, which is no longer running; taking it over`)
      const now = yield* Cli.runInProcess(["status", "--home", home])
      expect(now.code, now.stderr).toBe(0)
      expect(now.stdout).toContain(`listening ${next.quic}`)
      expect((yield* Effect.promise(() => fs.readFile(path.join(home, "node.lock"), "utf8"))).trim()).toBe(String(process.pid))
    }), { timeout: 120_000 })
})
