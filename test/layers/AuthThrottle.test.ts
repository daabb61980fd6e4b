/**
 * Failed authentications are limited per remote address, not only per connection: a node (`Node.layerMemory`, QUIC
 * and wss on 127.0.0.1) refuses an address that reached `max_auth_failures_per_ip` for `auth_block_ms` —
 * WebSocket upgrades get HTTP 429 before any WebSocket exists, QUIC connections are closed at admission. The block is
 * on the address: a well-behaved client from the same address (here: every client, all on 127.0.0.1) is refused too
 * until the cooldown ends. The counter's windows and cooldown are covered with TestClock in
 * test/services/RateLimit.test.ts; the limits here are long enough never to expire during a test.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Logger, Redacted } from "effect"
import { randomUUID } from "node:crypto"
import { WebSocket } from "ws"
import * as Node from "../../src/layers/Node.js"
import * as CallClient from "../../src/layers/Client.js"
import * as IdentityStore from "../../src/services/IdentityStore.js"

type Upgrade = { readonly opened: true } | { readonly opened: false; readonly status: number; readonly retryAfter: string | undefined }

/**
 * One raw WebSocket upgrade with `Authorization: Bearer <token>`. When it opens, a `node/ping` (without `auth_token`)
 * is answered before it is closed: by then the node has resolved the upgrade's token, so the failure is counted.
 */
const upgrade = (url: string, token: string) =>
  Effect.async<Upgrade>((resume) => {
    // A raw client: the node's self-signed key is not CA-verified here (alknet's own client pins it instead).
    const ws = new WebSocket(url, {
      headers: { authorization: `Bearer ${token}` },
      perMessageDeflate: false,
      rejectUnauthorized: false
    })
    const id = randomUUID()
    ws.once("open", () => {
      ws.once("message", (data) => {
        const answer = JSON.parse(String(data)) as { type: string; id: string }
        ws.close()
        resume(answer.type === "call.responded" && answer.id === id
          ? Effect.succeed({ opened: true })
          : Effect.dieMessage(`unexpected answer ${String(data)}`))
      })
      ws.send(Buffer.from(JSON.stringify({ type: "call.requested", id, payload: { operationId: "/node/ping", input: {} } })))
    })
    ws.once("unexpected-response", (request, response) => {
      request.destroy()
      resume(Effect.succeed({ opened: false, status: response.statusCode ?? 0, retryAfter: response.headers["retry-after"] }))
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
  it.live("12 WebSocket upgrades with bad bearer tokens: refused with 429 after the limit, a good client too", () =>
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
      // Five failures are allowed; the fifth starts the cooldown; every later upgrade is refused before it happens.
      expect(results.slice(0, 5)).toEqual(Array.from({ length: 5 }, () => ({ opened: true })))
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
})
