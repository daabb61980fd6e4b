/**
 * Failed authentications are limited per remote address, not only per connection: a node (`Node.layerMemory`, QUIC
 * and wss on 127.0.0.1) refuses an address that reached `max_auth_failures_per_ip` for `auth_block_ms` —
 * WebSocket upgrades get HTTP 429 before any WebSocket exists, QUIC connections are closed at admission. A WebSocket
 * upgrade whose bearer token resolves to nobody is answered HTTP 401 before the upgrade and counts as a failure. The block is
 * on the address: a well-behaved client from the same address (here: every client, all on 127.0.0.1) is refused too
 * until the cooldown ends. The counter's windows and cooldown are covered with TestClock in
 * test/services/RateLimit.test.ts; the limits here are long enough never to expire during a test.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Logger, Redacted } from "effect"
import { randomUUID } from "node:crypto"
import { WebSocket } from "ws"
import { CALL_PATH } from "../../src/layers/ws/WebSocket.js"
import * as Node from "../../src/layers/Node.js"
import * as CallClient from "../../src/layers/Client.js"
import * as IdentityStore from "../../src/services/IdentityStore.js"
import * as Cli from "../cli/cli.js"

type Upgrade =
  | { readonly opened: true; readonly whoami: unknown }
  | { readonly opened: false; readonly status: number; readonly retryAfter: string | undefined; readonly body: string }

/**
 * One raw WebSocket upgrade, with `Authorization: Bearer <token>` when a token is given. When it opens, a
 * `node/whoami` (without `auth_token`) is answered before it is closed; when it is refused, the HTTP answer is read.
 */
const upgrade = (url: string, token: string | undefined) =>
  Effect.async<Upgrade>((resume) => {
    // A raw client: the node's self-signed key is not CA-verified here (alknet's own client pins it instead).
    const ws = new WebSocket(new URL(CALL_PATH, url), {
      ...(token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } }),
      perMessageDeflate: false,
      rejectUnauthorized: false
    })
    const id = randomUUID()
    ws.once("open", () => {
      ws.once("message", (data) => {
        const answer = JSON.parse(String(data)) as { type: string; id: string; payload: { output?: unknown } }
        ws.close()
        resume(answer.type === "call.responded" && answer.id === id
          ? Effect.succeed({ opened: true, whoami: answer.payload.output })
          : Effect.dieMessage(`unexpected answer ${String(data)}`))
      })
      ws.send(Buffer.from(JSON.stringify({ type: "call.requested", id, payload: { operationId: "/node/whoami", input: {} } })))
    })
    ws.once("unexpected-response", (_request, response) => {
      const chunks: Array<Buffer> = []
      response.on("data", (chunk: Buffer) => chunks.push(chunk))
      response.once("end", () =>
        resume(Effect.succeed({
          opened: false,
          status: response.statusCode ?? 0,
          retryAfter: response.headers["retry-after"],
          body: Buffer.concat(chunks).toString("utf8")
        })))
    })
    ws.once("error", (error) => resume(Effect.die(error)))
    return Effect.sync(() => ws.terminate())
  })

/** The node's warnings, captured instead of printed. */
const warnings: Array<string> = []
const captureWarnings = Logger.replace(
  Logger.defaultLogger,
  Logger.make(({ logLevel, message }) => {
    if (logLevel._tag === "Warning") warnings.push(Array.isArray(message) ? message.join(" ") : String(message))
  })
)

const throttled = (rateLimits: Record<string, number>) =>
  Node.layerMemory({
    webSocket: { host: "127.0.0.1", port: 0 },
    config: { rate_limits: { auth_failure_window_ms: 600_000, auth_block_ms: 600_000, ...rateLimits } }
  })

describe("failed authentications per address", () => {
  it.live("12 WebSocket upgrades with bad bearer tokens: 401 up to the limit, then 429, a good client too", () =>
    Effect.gen(function*() {
      const node = yield* Node.Node
      const ws = node.transports.find((t) => t.kind === "wss")!.address
      const quic = node.transports.find((t) => t.kind === "quic")!.address
      const store = yield* IdentityStore.IdentityStore
      const good = yield* store.createApiKey({ scopes: ["x"] })

      // Before any failure, the good client gets in with its token.
      const pinned = { token: good.token, expectedFingerprint: node.fingerprint }
      const before = yield* CallClient.connect(ws, pinned)
      expect(yield* before.call("node/whoami", {})).toMatchObject({ identity: { id: good.entry.prefix } })
      yield* before.close

      const results: Array<Upgrade> = []
      for (let i = 0; i < 12; i++) results.push(yield* upgrade(ws, `alk_guess-number-${i}`))
      // Every unknown token is refused before the upgrade: five are answered 401 and counted; the fifth starts the
      // cooldown; every later upgrade is answered 429.
      for (const refused of results.slice(0, 5)) {
        expect(refused).toMatchObject({ opened: false, status: 401, retryAfter: undefined })
      }
      for (const refused of results.slice(5)) {
        expect(refused).toMatchObject({ opened: false, status: 429 })
        expect(Number(refused.opened ? 0 : refused.retryAfter)).toBeGreaterThan(590)
      }

      // The block is on the address: the good client from 127.0.0.1 is refused too, over WebSocket (429) …
      const rejected = yield* Effect.flip(CallClient.connect(ws, pinned))
      expect(rejected.reason).toBe("Rejected")
      expect(rejected.message).toMatch(/refused the WebSocket upgrade: HTTP 429 \(retry after \d+ s\)$/)
      // … and over QUIC, where the connection is closed at admission before anything is served.
      const overQuic = yield* CallClient.connect(quic, pinned)
      const closed = yield* Effect.flip(overQuic.call("node/ping", {}))
      expect(closed.message).toBe("connection closed")
      // One line for the block, none for the eight refusals that followed.
      expect(warnings).toEqual(["refusing 127.0.0.1 for 600 s: 5 failed authentications within 600 s"])
    }).pipe(
      Effect.scoped,
      Effect.provide(throttled({ max_auth_failures_per_ip: 5 })),
      Effect.provide(captureWarnings)
    ), { timeout: 30_000 })

  it.live("bad auth_tokens count across connections: reconnecting after max_auth_attempts does not reset the count", () =>
    Effect.gen(function*() {
      const node = yield* Node.Node
      const quic = node.transports.find((t) => t.kind === "quic")!.address
      const connect = CallClient.connect(quic, { expectedFingerprint: node.fingerprint })
      const bad = { authToken: Redacted.make("alk_not-a-real-token") }

      // First connection: three bad tokens close it (max_auth_attempts = 3).
      warnings.length = 0
      const first = yield* connect
      yield* first.call("node/whoami", {}, bad)
      yield* first.call("node/whoami", {}, bad)
      yield* Effect.flip(first.call("node/whoami", {}, bad))
      yield* first.closed
      // Second connection: two more make five from 127.0.0.1 (max_auth_failures_per_ip = 5).
      const second = yield* connect
      expect(yield* second.call("node/whoami", {}, bad)).toEqual({ identity: null })
      expect(yield* second.call("node/whoami", {}, bad)).toEqual({ identity: null })
      // The third is refused at admission, even without any token.
      const third = yield* connect
      expect((yield* Effect.flip(third.call("node/ping", {}))).message).toBe("connection closed")
      // The connection admitted before the block keeps being served (its own max_auth_attempts still applies).
      expect(yield* second.call("node/ping", {})).toMatchObject({ pong: true })
      expect(warnings.filter((w) => w.startsWith("refusing"))).toEqual(["refusing 127.0.0.1 for 600 s: 5 failed authentications within 600 s"])
    }).pipe(
      Effect.scoped,
      Effect.provide(throttled({ max_auth_failures_per_ip: 5, max_auth_attempts: 3 })),
      Effect.provide(captureWarnings)
    ), { timeout: 30_000 })
  it.live("a WebSocket upgrade: an unknown bearer token is 401 (counted), a good one and none at all get in", () =>
    Effect.gen(function*() {
      const node = yield* Node.Node
      const ws = node.transports.find((t) => t.kind === "wss")!.address
      const store = yield* IdentityStore.IdentityStore
      const good = yield* store.createApiKey({ scopes: ["x"] })
      const secret = "alk_not-a-real-token-4711"

      // An unknown token: 401 before any WebSocket, one line that does not echo the token.
      const unknown = yield* upgrade(ws, secret)
      expect(unknown).toEqual({ opened: false, status: 401, retryAfter: undefined, body: "unknown bearer token\n" })
      // A good token: the connection is that caller.
      expect(yield* upgrade(ws, Redacted.value(good.token))).toEqual({
        opened: true,
        whoami: expect.objectContaining({ identity: expect.objectContaining({ id: good.entry.prefix }) })
      })
      // No token: anonymous, served.
      expect(yield* upgrade(ws, undefined)).toEqual({ opened: true, whoami: { identity: null } })
      // alknet's client says it plainly (CallClient: `Rejected`), without the token.
      const rejected = yield* Effect.flip(
        CallClient.connect(ws, { token: Redacted.make(secret), expectedFingerprint: node.fingerprint })
      )
      expect(rejected.reason).toBe("Rejected")
      expect(rejected.message).toMatch(/refused the WebSocket upgrade: HTTP 401 \(the bearer token was not accepted\)$/)
      expect(rejected.message).not.toContain(secret)
      // So does the CLI: one line, exit 18 (Rejected).
      const cli = yield* Cli.runInProcess(["call", ws, "node/whoami", "--fingerprint", node.fingerprint], {
        env: { ALKNET_TOKEN: secret }
      })
      expect(cli.code, cli.stderr).toBe(18)
      expect(cli.stderr.trim().split("\n")).toEqual([
        expect.stringMatching(/refused the WebSocket upgrade: HTTP 401 \(the bearer token was not accepted\)$/)
      ])
      expect(cli.stderr).not.toContain(secret)
      // The three 401s were failed authentications: with the third (max_auth_failures_per_ip = 3) the address is blocked,
      // and even the good token is answered 429.
      expect(yield* upgrade(ws, "alk_another-guess")).toMatchObject({ opened: false, status: 401 })
      expect(yield* upgrade(ws, Redacted.value(good.token))).toMatchObject({ opened: false, status: 429 })
      expect(warnings.some((w) => w.includes(secret))).toBe(false)
    }).pipe(
      Effect.scoped,
      Effect.provide(throttled({ max_auth_failures_per_ip: 4 })),
      Effect.provide(captureWarnings)
    ), { timeout: 30_000 })
})
