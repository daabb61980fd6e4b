/**
 * A peer graph run by an operator: three `alknet node` processes on loopback. Two workers (`--demo`: `demo/echo`
 * answers the worker's id), a head started with `--connect w1=… --connect w2=…`, and `alknet call` as the client,
 * calling through the head by pinned name (`w1/demo/echo`: that worker) and plain name (`demo/echo`: any worker).
 * Also: `ls --peers`, `status --home`, abort propagation, a worker stopped and restarted, and `peer connect|disconnect`
 * editing the head's config while it runs (with a bearer token from its credential store).
 *
 * The nodes are processes; the client and admin commands run in this process (`Cli.runInProcess`: the same program, output
 * captured), as a process start costs seconds on a busy machine. Every wait is for a condition (a line printed, an
 * answer that changes); the overall limits only catch a hang.
 */
import { expect, it } from "@effect/vitest"
import { Effect, Fiber, Schedule } from "effect"
import * as dgram from "node:dgram"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import * as Cli from "./cli.js"

const json = (text: string) => JSON.parse(text) as Record<string, any>

/** A UDP port free now (the workers listen on fixed ports so the head finds a restarted worker where it was). */
const freePort = Effect.async<number>((resume) => {
  const socket = dgram.createSocket("udp4")
  socket.bind(0, "127.0.0.1", () => {
    const port = socket.address().port
    socket.close(() => resume(Effect.succeed(port)))
  })
})

/** `alknet node` on a fixed QUIC address, with what its first line said. */
const startAt = (home: string, listen: string, flags: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const running = yield* Cli.spawnRunning(["node", "--home", home, "--listen", listen, ...flags])
    yield* running.waitFor("stderr", /alknet node: serving/)
    const first = /^alknet node (\S+) listening (quic:\/\/\S+)$/.exec(running.stdout().split("\n")[0] ?? "")
    if (first === null) return yield* Effect.dieMessage(`unexpected first line: ${running.stdout()}`)
    return { ...running, fingerprint: first[1]!, quic: first[2]! }
  })

/** Retry `f` every 200 ms until it succeeds (a condition the head reaches on its own: a link up or down). */
const eventually = <A>(f: Effect.Effect<A, string>) =>
  Effect.retry(f, Schedule.spaced("200 millis").pipe(Schedule.upTo("2 minutes")))

it.live("a head routes to each worker and any worker, aborts, survives a worker restart and live config edits", () =>
  Effect.gen(function*() {
    const dir = yield* Cli.tempDir
    const [w1Home, w2Home, headHome] = yield* Effect.all(
      [Cli.initHomeInProcess(dir, "w1"), Cli.initHomeInProcess(dir, "w2"), Cli.initHomeInProcess(dir, "head")],
      { concurrency: "unbounded" }
    )
    const [p1, p2] = [yield* freePort, yield* freePort]
    const [w1, w2] = yield* Effect.all([
      startAt(w1Home.home, `127.0.0.1:${p1}`, ["--demo"]),
      startAt(w2Home.home, `127.0.0.1:${p2}`, ["--demo"])
    ], { concurrency: "unbounded" })
    yield* Cli.writeConfig(headHome.home, { list_peers: true })
    const head = yield* Cli.startNode(headHome.home, [
      "--connect",
      `w1=${w1.quic}#${w1.fingerprint}`,
      "--connect",
      `w2=${w2.quic}#${w2.fingerprint}`
    ])
    const call = (op: string, input = "{}") => Cli.runInProcess(["call", head.quic, op, input, "--fingerprint", head.fingerprint])
    const ok = (op: string, input?: string) =>
      Effect.flatMap(call(op, input), (r) => (r.code === 0 ? Effect.succeed(json(r.stdout)) : Effect.fail(r.stderr)))
    // node/info with the head's own key (--home): an admin, so it tells the outbound peers (anonymous callers: not).
    const headInfo = Effect.flatMap(
      Cli.runInProcess(["call", head.quic, "node/info", "--home", headHome.home, "--fingerprint", head.fingerprint]),
      (r) => (r.code === 0 ? Effect.succeed(json(r.stdout)) : Effect.fail(r.stderr))
    )

    // Both links come up on their own; node/info says so (6 imports each: node/info, node/ping, node/whoami and the
    // three open demo operations).
    const info = yield* eventually(Effect.flatMap(headInfo, (i) =>
      i.peers.length === 2 && i.peers.every((p: any) => p.state === "connected") ? Effect.succeed(i) : Effect.fail("not yet")))
    expect(info.peers.map((p: any) => [p.peer_id, p.address, p.operations, p.export_as])).toEqual([
      ["w1", w1.quic, 6, "external"],
      ["w2", w2.quic, 6, "external"]
    ])
    expect(yield* ok("node/info")).toEqual({ id: head.fingerprint, fingerprint: head.fingerprint, version: info.version })

    // Specific (pinned names) and Any (the plain name), listed by ls.
    const [e1, e2, any, ls] = yield* Cli.runAllInProcess(
      ["call", head.quic, "w1/demo/echo", "{\"hi\":1}", "--fingerprint", head.fingerprint],
      ["call", head.quic, "w2/demo/echo", "{}", "--fingerprint", head.fingerprint],
      ["call", head.quic, "demo/echo", "{}", "--fingerprint", head.fingerprint],
      ["ls", head.quic, "--fingerprint", head.fingerprint]
    )
    expect(e1.code, e1.stderr).toBe(0)
    expect(json(e1.stdout)).toEqual({ echo: { hi: 1 }, node: w1.fingerprint })
    expect(json(e2.stdout).node).toBe(w2.fingerprint)
    expect([w1.fingerprint, w2.fingerprint]).toContain(json(any.stdout).node)
    expect(ls.stdout).toMatch(/^w1\/demo\/echo\s+query$/m)
    expect(ls.stdout).toMatch(/^w2\/demo\/slow\s+query$/m)
    expect(ls.stdout).toMatch(/^demo\/echo\s+query$/m)
    const [lsPeers, status, noListPeers] = yield* Cli.runAllInProcess(
      ["ls", head.quic, "--peers", "--fingerprint", head.fingerprint],
      ["status", "--home", headHome.home],
      ["ls", w1.quic, "--peers", "--fingerprint", w1.fingerprint]
    )
    expect(noListPeers.code).toBe(20)
    expect(Cli.lastLine(noListPeers.stderr)).toContain("does not serve services/list-peers (its config enables it with")
    expect(lsPeers.code, lsPeers.stderr).toBe(0)
    expect(lsPeers.stdout).toMatch(/^local\s+services\/list-peers\s+query$/m)
    expect(lsPeers.stdout).toMatch(/^w1\s+demo\/slow\s+query$/m)
    expect(lsPeers.stdout).toMatch(/^w2\s+demo\/ticks\s+subscription$/m)
    expect(status.code, status.stderr).toBe(0)
    expect(status.stdout).toContain(`node ${head.fingerprint}`)
    expect(status.stdout).toMatch(new RegExp(`^w1\\s+${w1.quic}\\s+connected\\s+6\\s+external\\s+-$`, "m"))

    // Stopping the client's call to w2/demo/slow (what Ctrl-C does: interrupt the command; test/cli/node.test.ts
    // sends the signal itself) interrupts it on w2.
    const slow = yield* Effect.fork(
      Cli.runInProcess(["call", head.quic, "w2/demo/slow", "{}", "--fingerprint", head.fingerprint])
    )
    yield* w2.waitFor("stderr", /demo: demo\/slow started/)
    yield* Fiber.interrupt(slow)
    yield* w2.waitFor("stderr", /demo: demo\/slow interrupted/)

    // A worker that goes away: a clear error naming it; the other still answers.
    yield* w1.signal("SIGTERM")
    yield* w1.exited
    const gone = yield* eventually(Effect.flatMap(call("w1/demo/echo"), (r) =>
      /peer w1 is not connected/.test(r.stderr) ? Effect.succeed(r) : Effect.fail(r.stderr)))
    expect(gone.code).not.toBe(0)
    expect(Cli.errorLines(gone.stderr)).toHaveLength(1)
    expect((yield* ok("w2/demo/echo")).node).toBe(w2.fingerprint)
    const away = yield* headInfo
    expect(away.peers[0]).toMatchObject({ peer_id: "w1", state: "reconnecting", operations: 6 })
    expect(away.peers[0].last_error).toEqual(expect.any(String))
    expect(away.peers[0].attempts).toBeGreaterThanOrEqual(1) // the loss counts
    const awayStatus = yield* Cli.runInProcess(["status", "--home", headHome.home])
    expect(awayStatus.stdout).toMatch(/^w1\s+\S+\s+reconnecting \(\d+ attempts?\)\s+6\s+external\s+\S/m)

    // It comes back where it was: the head reconnects and re-imports, untouched.
    const w1Again = yield* startAt(w1Home.home, `127.0.0.1:${p1}`, ["--demo"])
    const back = yield* eventually(ok("w1/demo/echo"))
    expect(back.node).toBe(w1Again.fingerprint)

    // Config edits apply live: add a third entry (w2 again, as w3, with a token from the head's credential store,
    // which w2 grants the scope demo), then remove it.
    const created = yield* Cli.runInProcess(["token", "create", "--home", w2Home.home, "--scope", "demo", "--expires", "1d"])
    expect(created.code, created.stderr).toBe(0)
    const token = created.stdout.trim()
    const put = yield* Cli.runInProcess(["credential", "put", "--home", headHome.home, "w2-token"], { stdin: token })
    expect(put.code, put.stderr).toBe(0)
    const connect = yield* Cli.runInProcess([
      "peer", "connect", "--home", headHome.home, `w3=${w2.quic}#${w2.fingerprint}`, "--token-credential", "w2-token"
    ])
    expect(connect.code, connect.stderr).toBe(0)
    expect(connect.stdout.trim()).toBe(`connect w3 ${w2.quic} (external)`)
    const written = yield* Effect.promise(() => fs.readFile(path.join(headHome.home, "config.json"), "utf8"))
    expect(written).toContain("\"token_credential\": \"w2-token\"")
    expect(written).not.toContain(token)
    expect((yield* eventually(ok("w3/demo/echo"))).node).toBe(w2.fingerprint)
    // With the token, w2 lets the head see and call demo/secret (without one, as w2, it does not). The head exports it
    // with w2's declared access control: its own callers need the scope demo at the head too.
    const headToken = yield* Cli.runInProcess(["token", "create", "--home", headHome.home, "--scope", "demo", "--expires", "1d"])
    const withScope = { env: { ALKNET_TOKEN: headToken.stdout.trim() } }
    const secret = ["call", head.quic, "w3/demo/secret", "--fingerprint", head.fingerprint]
    const [allowed, denied, notImported] = yield* Effect.all([
      Cli.runInProcess(secret, withScope),
      Cli.runInProcess(secret),
      Cli.runInProcess(["call", head.quic, "w2/demo/secret", "--fingerprint", head.fingerprint], withScope)
    ], { concurrency: "unbounded" })
    expect(allowed.code, allowed.stderr).toBe(0)
    expect(json(allowed.stdout)).toEqual({ secret: "the demo secret", caller: token.slice(0, 8) })
    expect(denied.code, denied.stderr).toBe(21)
    expect(notImported.code).toBe(20)
    const disconnect = yield* Cli.runInProcess(["peer", "disconnect", "--home", headHome.home, "w3"])
    expect(disconnect.code, disconnect.stderr).toBe(0)
    const removed = yield* eventually(Effect.flatMap(call("w3/demo/echo"), (r) =>
      /not found/i.test(r.stderr) ? Effect.succeed(r) : Effect.fail(r.stderr)))
    expect(removed.code).not.toBe(0)
    expect((yield* headInfo).peers.map((p: any) => p.peer_id)).toEqual(["w1", "w2"])
  }).pipe(Effect.scoped), { timeout: 300_000 })
