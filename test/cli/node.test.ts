/**
 * `alknet node` and the commands that talk to it, as a user runs them on loopback. The node is a separate process
 * (home A, `--demo`, QUIC + WebSocket + the HTTP gateway on a port of its own) serving the whole block; a second home B is a peer's identity. The commands
 * run in this process (`Cli.runInProcess`: the same program, output captured), which is another process than the node's:
 * what one writes to the home's store, the running node picks up. `subscribe` with Ctrl-C is a process of its own
 * (a signal). The last test stops the node with SIGTERM.
 */
import { expect, layer } from "@effect/vitest"
import { Context, Effect, Fiber, Layer } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import * as Cli from "./cli.js"

const PETS = {
  openapi: "3.1.0",
  info: { title: "pets", version: "1" },
  paths: { "/pets": { get: { operationId: "list", responses: { "200": { description: "the pets" } } } } }
}

class Shared extends Context.Tag("test/cli/Shared")<Shared, {
  readonly node: Cli.CliNode
  readonly peer: { readonly home: string; readonly fingerprint: string }
}>() {}

const SharedLive = Layer.scoped(
  Shared,
  Effect.gen(function*() {
    const dir = yield* Cli.tempDir
    const [a, b] = yield* Effect.all([Cli.initHomeInProcess(dir, "a", "--words", "12"), Cli.initHomeInProcess(dir, "b")], {
      concurrency: "unbounded"
    })
    // Room for the drain test on a loaded machine; an import from a file beside the config (a relative path).
    yield* Effect.promise(() => fs.writeFile(path.join(a.home, "pets.json"), JSON.stringify(PETS)))
    yield* Cli.writeConfig(a.home, {
      drain_timeout_ms: 15000,
      imports: [{ type: "openapi", namespace: "pets", file: "pets.json", base_url: "http://127.0.0.1:1" }]
    })
    const node = yield* Cli.startNode(a.home, ["--ws-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--http-plain", "--demo"])
    expect(node.fingerprint).toBe(a.fingerprint)
    return { node, peer: b }
  })
)

const json = (text: string) => JSON.parse(text) as Record<string, any>
const { errorLines, lastLine } = Cli

// Every wait below is for a condition (a line printed, a command's exit); the limits only catch a hang.
layer(SharedLive, { excludeTestServices: true, timeout: "5 minutes" })("alknet node (one running node)", (it) => {
  it.effect("prints the stable first lines; ls and call node/info with the pinned fingerprint, over QUIC and wss", () =>
    Effect.gen(function*() {
      const { node } = yield* Shared
      expect(node.stdout().split("\n")[0]).toBe(`alknet node ${node.fingerprint} listening ${node.quic}`)
      expect(node.quic).toMatch(/^quic:\/\/127\.0\.0\.1:\d+$/)
      expect(node.ws).toMatch(/^wss:\/\/127\.0\.0\.1:\d+$/)
      const pin = ["--fingerprint", node.fingerprint]
      const [ls, info, lsJson, ownInfo] = yield* Cli.runAllInProcess(
        ["ls", node.quic, ...pin],
        ["call", node.quic, "node/info", ...pin],
        ["ls", node.ws!, "--json", ...pin],
        ["call", node.quic, "node/info", "--home", node.home, ...pin]
      )
      expect(ls.code, ls.stderr).toBe(0)
      expect(ls.stdout).toMatch(/^OPERATION\s+TYPE\n/)
      expect(ls.stdout).toMatch(/^node\/info\s+query$/m)
      expect(ls.stdout).toMatch(/^demo\/ticks\s+subscription$/m)
      expect(ls.stdout).not.toMatch(/demo\/secret/) // not callable without the scope, so not listed

      // Anonymous: who the node is, not where it listens; its own key (--home) is an admin and sees that too.
      expect(info.code, info.stderr).toBe(0)
      expect(Object.keys(json(info.stdout)).sort()).toEqual(["fingerprint", "id", "version"])
      expect(json(info.stdout).fingerprint).toBe(node.fingerprint)
      expect(ownInfo.code, ownInfo.stderr).toBe(0)
      expect(json(ownInfo.stdout).transports).toEqual(expect.arrayContaining([
        { kind: "quic", address: node.quic },
        { kind: "wss", address: node.ws },
        { kind: "http", address: node.http }
      ]))
      expect(json(ownInfo.stdout).transports).toHaveLength(3)

      expect(lsJson.code, lsJson.stderr).toBe(0)
      expect(json(lsJson.stdout).operations).toContainEqual({ name: "node/ping", namespace: "node", op_type: "query" })
    }))

  it.effect("fails closed without --fingerprint, and on a wrong one", () =>
    Effect.gen(function*() {
      const { node } = yield* Shared
      const [unpinned, wrong] = yield* Cli.runAllInProcess(
        ["call", node.quic, "node/info"],
        ["call", node.quic, "node/info", "--fingerprint", `ed25519:${"0".repeat(64)}`]
      )
      expect(unpinned.code).toBe(17)
      expect(unpinned.stdout).toBe("")
      expect(errorLines(unpinned.stderr)).toEqual([lastLine(unpinned.stderr)])
      expect(lastLine(unpinned.stderr)).toMatch(/^alknet: .*refusing to connect without --fingerprint/)
      expect(wrong.code).toBe(16)
      expect(lastLine(wrong.stderr)).toContain(`presented ${node.fingerprint}, which is not the pinned ed25519:000`)
    }))

  it.effect("peer add from another process: the running node lets that peer call an op requiring its scope", () =>
    Effect.gen(function*() {
      const { node, peer } = yield* Shared
      const asPeer = ["call", node.quic, "demo/secret", "--home", peer.home, "--fingerprint", node.fingerprint]
      const before = yield* Cli.runInProcess(asPeer)
      expect(before.code).toBe(21)
      expect(lastLine(before.stderr)).toBe("FORBIDDEN: authentication required")

      const added = yield* Cli.runInProcess([
        "peer", "add", "--home", node.home, "--id", "bob", "--fingerprint", peer.fingerprint,
        "--scope", "demo", "--resource", "fs=read", "--display-name", "Bob"
      ])
      expect(added.code, added.stderr).toBe(0)
      expect(added.stdout.trim()).toBe("added peer bob (1 fingerprint; scopes: demo; resources: fs=read)")

      // No restart: the node picked the store's change up.
      const [after, again, listed] = yield* Cli.runAllInProcess(
        asPeer,
        ["peer", "add", "--home", node.home, "--id", "bob"],
        ["peer", "list", "--home", node.home, "--json"]
      )
      expect(after.code, after.stderr).toBe(0)
      expect(json(after.stdout)).toEqual({ secret: "the demo secret", caller: "bob" })
      expect(again.code).toBe(11)
      expect(lastLine(again.stderr)).toBe("alknet: peer bob already exists; change it with: alknet peer update --id bob")
      expect(json(listed.stdout)).toEqual([{
        peer_id: "bob",
        fingerprints: [peer.fingerprint],
        scopes: ["demo"],
        resources: { fs: ["read"] },
        display_name: "Bob",
        enabled: true
      }])

      // A peer token resolves to the peer, without its key. (Created after the listing, which it would change.)
      const peerToken = yield* Cli.runInProcess(["token", "create", "--home", node.home, "--peer", "bob"])
      expect(peerToken.code, peerToken.stderr).toBe(0)
      const withToken = yield* Cli.runInProcess([
        "call", node.quic, "node/whoami", "--fingerprint", node.fingerprint, "--token", peerToken.stdout.trim()
      ])
      expect(json(withToken.stdout)).toEqual({ identity: { id: "bob", scopes: ["demo"], resources: { fs: ["read"] } } })

      // Disabled, the peer resolves to nothing: at once, again without a restart.
      const disabled = yield* Cli.runInProcess(["peer", "update", "--home", node.home, "--id", "bob", "--disabled"])
      expect(disabled.stdout.trim()).toBe("updated peer bob (1 fingerprint; scopes: demo; resources: fs=read; disabled)")
      const denied = yield* Cli.runInProcess(asPeer)
      expect(denied.code).toBe(21)
    }))

  it.effect("token create, then a call with the token is allowed; revoked, it is not", () =>
    Effect.gen(function*() {
      const { node } = yield* Shared
      const created = yield* Cli.runInProcess(["token", "create", "--home", node.home, "--scope", "demo", "--expires", "30d"])
      expect(created.code, created.stderr).toBe(0)
      const token = created.stdout.trim()
      const prefix = token.slice(0, 8)
      expect(token).toMatch(/^alk_[A-Za-z0-9_-]{32}$/)
      expect(created.stderr).toContain(`API key ${prefix} created (scopes: demo; expires `)
      expect(created.stderr).not.toContain(token)

      const secret = ["call", node.quic, "demo/secret", "--fingerprint", node.fingerprint]
      const [allowed, listed] = yield* Effect.all([
        Cli.runInProcess(secret, { env: { ALKNET_TOKEN: token } }),
        Cli.runInProcess(["token", "list", "--home", node.home])
      ], { concurrency: "unbounded" })
      expect(allowed.code, allowed.stderr).toBe(0)
      expect(json(allowed.stdout)).toEqual({ secret: "the demo secret", caller: prefix })
      expect(listed.stdout).toMatch(new RegExp(`^api-key\\s+${prefix}\\s+demo\\s+\\d{4}-`, "m"))
      expect(listed.stdout).not.toContain(token)

      const revoked = yield* Cli.runInProcess(["token", "revoke", "--home", node.home, prefix])
      expect(revoked.stdout.trim()).toBe(`revoked API key ${prefix}`)
      const denied = yield* Cli.runInProcess([...secret, "--token", token])
      expect(denied.code).toBe(21)
    }))

  it.effect("subscribe prints one JSON line per item; Ctrl-C stops it and the node's handler is interrupted", () =>
    Effect.gen(function*() {
      const { node } = yield* Shared
      const pin = ["--fingerprint", node.fingerprint]
      const counted = yield* Cli.runInProcess(["subscribe", node.quic, "demo/ticks", `{"count":3,"interval_ms":5}`, ...pin])
      expect(counted.code, counted.stderr).toBe(0)
      expect(counted.stdout).toBe(`{"n":0}\n{"n":1}\n{"n":2}\n`)

      const started = /demo: demo\/ticks started \(([0-9a-f-]+)\)/
      const before = node.count("stderr", started)
      yield* Effect.scoped(Effect.gen(function*() {
        const sub = yield* Cli.spawnRunning(["subscribe", node.quic, "demo/ticks", `{"interval_ms":50}`, ...pin])
        yield* sub.waitFor("stdout", /\{"n":2\}\n/)
        const id = (yield* node.waitForNew("stderr", started, before))[1]!
        yield* sub.signal("SIGINT")
        expect(yield* sub.exited).toBe(130)
        yield* node.waitFor("stderr", new RegExp(`demo: demo/ticks interrupted after \\d+ items \\(${id}\\)`))
        expect(sub.stdout()).toMatch(/^(\{"n":\d+\}\n)+$/)
      }))
    }))

  it.effect("schema prints the spec; bad input gets one line and its exit code", () =>
    Effect.gen(function*() {
      const { node } = yield* Shared
      const pin = ["--fingerprint", node.fingerprint]
      const [schema, badJson, unknownOp, badInput, badTimeout, timedOut] = yield* Cli.runAllInProcess(
        ["schema", node.quic, "demo/slow", ...pin],
        ["call", node.quic, "demo/echo", "{oops", ...pin],
        ["call", node.quic, "nope/nothing", ...pin],
        ["call", node.quic, "demo/slow", `{"ms":"soon"}`, ...pin],
        ["call", node.quic, "demo/echo", "--timeout", "1x", ...pin],
        ["call", node.quic, "demo/slow", `{"ms":60000}`, "--timeout", "200ms", ...pin]
      )
      expect(schema.code, schema.stderr).toBe(0)
      expect(json(schema.stdout)).toMatchObject({ name: "demo/slow", op_type: "query", visibility: "external" })
      const cases = [
        [badJson, 3, /^alknet: invalid JSON input: /],
        [unknownOp, 20, /^NOT_FOUND: operation not found: nope\/nothing$/],
        [badInput, 22, /^INVALID_INPUT: invalid input at ms: /],
        [badTimeout, 2, /^alknet: --timeout: expected a duration/],
        [timedOut, 25, /^TIMEOUT: request timed out$/]
      ] as const
      for (const [result, code, message] of cases) {
        expect(result.code, result.stderr).toBe(code)
        expect(errorLines(result.stderr)).toEqual([lastLine(result.stderr)])
        expect(lastLine(result.stderr)).toMatch(message)
        expect(result.stdout).toBe("")
      }
    }))

  it.effect("--http-listen serves the gateway on a port of its own (plain http with --http-plain)", () =>
    Effect.gen(function*() {
      const { node } = yield* Shared
      expect(node.http).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
      const answer = yield* Effect.promise(() =>
        fetch(`${node.http}/call/demo/echo`, { method: "POST", body: JSON.stringify({ text: "over http" }) })
          .then(async (r) => ({ status: r.status, body: await r.json() as any }))
      )
      expect(answer).toMatchObject({ status: 200, body: { result: "ok", output: { echo: { text: "over http" } } } })
    }))

  it.effect("status shows the config's imports (a file beside the config, imported as Internal operations)", () =>
    Effect.gen(function*() {
      const { node } = yield* Shared
      // The node loads its imports once it runs: ask until it has (a condition, not a clock).
      const status = yield* Cli.runInProcess(["status", "--home", node.home]).pipe(
        Effect.repeat({ until: (result) => result.code !== 0 || !/\simporting\s/.test(result.stdout) })
      )
      expect(status.code, status.stderr).toBe(0)
      expect(status.stdout).toMatch(/^IMPORT\s+TYPE\s+SOURCE\s+STATE\s+OPERATIONS\s+LAST ERROR$/m)
      expect(status.stdout).toMatch(new RegExp(`^pets\\s+openapi\\s+${path.join(node.home, "pets.json").replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\s+imported\\s+1\\s+-$`, "m"))
    }))

  it.effect("openapi prints the 3.1 document of what the caller may call, typed per operation", () =>
    Effect.gen(function*() {
      const { node } = yield* Shared
      const [doc] = yield* Cli.runAllInProcess(["openapi", node.quic, "--fingerprint", node.fingerprint])
      expect(doc.code, doc.stderr).toBe(0)
      const document = json(doc.stdout)
      expect(document.openapi).toBe("3.1.0")
      expect(Object.keys(document.paths)).toEqual(expect.arrayContaining(["/call", "/call/demo/echo", "/subscribe/demo/ticks"]))
      expect(Object.keys(document.paths)).not.toContain("/call/demo/secret") // not callable without the scope
    }))

  it.effect("demo/echo answers through the node; SIGTERM drains an in-flight call, which still gets its answer", () =>
    Effect.gen(function*() {
      const { node } = yield* Shared
      const pin = ["--fingerprint", node.fingerprint]
      const echo = yield* Cli.runInProcess(["call", node.quic, "demo/echo", `{"hello":[1,2]}`, ...pin])
      expect(json(echo.stdout)).toEqual({ echo: { hello: [1, 2] }, node: node.fingerprint })

      const started = /demo: demo\/slow started \(([0-9a-f-]+)\)/
      const before = node.count("stderr", started)
      const slow = yield* Effect.fork(Cli.runInProcess(["call", node.quic, "demo/slow", `{"ms":1500}`, ...pin]))
      const id = (yield* node.waitForNew("stderr", started, before))[1]!
      yield* node.signal("SIGTERM")
      const answered = yield* Fiber.join(slow)
      expect(answered.code, answered.stderr).toBe(0)
      expect(json(answered.stdout).slept_ms).toBeGreaterThanOrEqual(1500)
      expect(yield* node.exited).toBe(0)
      expect(node.stderr()).toContain("alknet node: stopping: no new connections, draining open calls")
      expect(node.stderr()).toMatch(new RegExp(`demo/slow finished after \\d+ ms \\(${id}\\)`))
      expect(node.stderr()).not.toContain(`demo/slow interrupted (${id})`)
      expect(node.stderr().trimEnd().endsWith("alknet node: stopped")).toBe(true)
    }))
})
