/**
 * A peer graph run by an operator: three `alknet node` processes on loopback. Two workers (`--demo`: `demo/echo`
 * answers the worker's id), a head started with `--connect w1=… --connect w2=…`, and `alknet call` as the client,
 * calling through the head by pinned name (`w1/demo/echo`: that worker) and plain name (`demo/echo`: any worker).
 */
import { expect, it } from "@effect/vitest"
import { Effect, Schedule } from "effect"
import * as dgram from "node:dgram"
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
  Effect.retry(f, Schedule.spaced("200 millis").pipe(Schedule.upTo("30 seconds")))

it.live("a head routes to each worker and any worker, aborts, survives a worker restart and live config edits", () =>
  Effect.gen(function*() {
    const dir = yield* Cli.tempDir
    const [w1Home, w2Home, headHome] = yield* Effect.all(
      [Cli.initHome(dir, "w1"), Cli.initHome(dir, "w2"), Cli.initHome(dir, "head")],
      { concurrency: "unbounded" }
    )
    const [p1, p2] = [yield* freePort, yield* freePort]
    const [w1, w2] = yield* Effect.all([
      startAt(w1Home.home, `127.0.0.1:${p1}`, ["--demo"]),
      startAt(w2Home.home, `127.0.0.1:${p2}`, ["--demo"])
    ], { concurrency: "unbounded" })
    const head = yield* Cli.startNode(headHome.home, [
      "--connect",
      `w1=${w1.quic}#${w1.fingerprint}`,
      "--connect",
      `w2=${w2.quic}#${w2.fingerprint}`
    ])
    const call = (op: string, input = "{}") => Cli.run(["call", head.quic, op, input, "--fingerprint", head.fingerprint])
    const ok = (op: string, input?: string) =>
      Effect.flatMap(call(op, input), (r) => (r.code === 0 ? Effect.succeed(json(r.stdout)) : Effect.fail(r.stderr)))

    // Both links come up on their own; node/info says so (6 imports each: node/info, node/ping, node/whoami and the
    // three open demo operations).
    const info = yield* eventually(Effect.flatMap(ok("node/info"), (i) =>
      i.peers.length === 2 && i.peers.every((p: any) => p.state === "connected") ? Effect.succeed(i) : Effect.fail("not yet")))
    expect(info.peers.map((p: any) => [p.peer_id, p.address, p.operations, p.export_as])).toEqual([
      ["w1", w1.quic, 6, "external"],
      ["w2", w2.quic, 6, "external"]
    ])

    // Specific (pinned names) and Any (the plain name), listed by ls.
    const [e1, e2, any, ls] = yield* Cli.runAll(
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

    // Ctrl-C on the client's call to w2/demo/slow interrupts it on w2.
    const slow = yield* Cli.spawnRunning(["call", head.quic, "w2/demo/slow", "{}", "--fingerprint", head.fingerprint])
    yield* w2.waitFor("stderr", /demo: demo\/slow started/)
    yield* slow.signal("SIGINT")
    yield* w2.waitFor("stderr", /demo: demo\/slow interrupted/)
    expect(yield* slow.exited).not.toBe(0)

    // A worker that goes away: a clear error naming it; the other still answers.
    yield* w1.signal("SIGTERM")
    yield* w1.exited
    const gone = yield* eventually(Effect.flatMap(call("w1/demo/echo"), (r) =>
      /peer w1 is not connected/.test(r.stderr) ? Effect.succeed(r) : Effect.fail(r.stderr)))
    expect(gone.code).not.toBe(0)
    expect(Cli.errorLines(gone.stderr)).toHaveLength(1)
    expect((yield* ok("w2/demo/echo")).node).toBe(w2.fingerprint)
    const away = yield* ok("node/info")
    expect(away.peers[0]).toMatchObject({ peer_id: "w1", state: "reconnecting" })
    expect(away.peers[0].last_error).toEqual(expect.any(String))

    // It comes back where it was: the head reconnects and re-imports, untouched.
    const w1Again = yield* startAt(w1Home.home, `127.0.0.1:${p1}`, ["--demo"])
    const back = yield* eventually(ok("w1/demo/echo"))
    expect(back.node).toBe(w1Again.fingerprint)

    // Config edits apply live: add a third entry (w2 again, as w3), then remove it.
    const connect = yield* Cli.run(["peer", "connect", "--home", headHome.home, `w3=${w2.quic}#${w2.fingerprint}`])
    expect(connect.code, connect.stderr).toBe(0)
    expect((yield* eventually(ok("w3/demo/echo"))).node).toBe(w2.fingerprint)
    const disconnect = yield* Cli.run(["peer", "disconnect", "--home", headHome.home, "w3"])
    expect(disconnect.code, disconnect.stderr).toBe(0)
    const removed = yield* eventually(Effect.flatMap(call("w3/demo/echo"), (r) =>
      /not found/i.test(r.stderr) ? Effect.succeed(r) : Effect.fail(r.stderr)))
    expect(removed.code).not.toBe(0)
    expect((yield* ok("node/info")).peers.map((p: any) => p.peer_id)).toEqual(["w1", "w2"])
  }).pipe(Effect.scoped), { timeout: 120_000 })
