/**
 * One anonymous client floods a node: 4 WebSocket connections send 160,000 `call.requested` for a subscription that
 * would tick once a day (issue: this used to take the node to 4 GB and an out-of-memory crash). The node bounds what
 * one caller can hold — 256 calls in flight per connection, 1,024 per caller — and sheds the rest with `OVERLOADED`
 * (retryable), so its resident memory stays under the ceiling README states (512 MiB), while an authenticated client
 * keeps getting answers throughout.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Redacted } from "effect"
import * as fs from "node:fs"
import { WebSocket } from "ws"
import { CALL_PATH } from "../../src/layers/ws/WebSocket.js"
import * as CallClient from "../../src/layers/Client.js"
import * as Cli from "./cli.js"

const CEILING_BYTES = 512 * 1024 * 1024
const SOCKETS = 4
const PER_SOCKET = 40_000

const rss = (pid: number): number => {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8")
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024
}

/** Send the flood on one socket; resolves with how many answers came back before the socket closed. */
const flood = (url: string, socketIndex: number) =>
  Effect.async<{ readonly answers: number; readonly overloaded: number }>((resume) => {
    let answers = 0
    let overloaded = 0
    // hostile: it does not verify the server
    const socket = new WebSocket(new URL(CALL_PATH, url), { rejectUnauthorized: false, perMessageDeflate: false })
    socket.on("error", () => undefined)
    socket.on("open", () => {
      for (let i = 0; i < PER_SOCKET; i++) {
        socket.send(Buffer.from(JSON.stringify({
          type: "call.requested",
          id: `flood-${socketIndex}-${i}`,
          payload: { operationId: "/demo/ticks", input: { interval_ms: 100_000_000 } }
        })))
      }
    })
    socket.on("message", (data: Buffer) => {
      answers++
      if (data.includes("OVERLOADED")) overloaded++
      // every request was either shed or is held open: stop when all are accounted for
      if (answers === PER_SOCKET - 256) socket.close()
    })
    socket.on("close", () => resume(Effect.succeed({ answers, overloaded })))
    return Effect.sync(() => socket.terminate())
  })

describe("a flood from one client", () => {
  it.live("160,000 endless subscriptions: the node sheds them, stays under its memory ceiling, and serves others", () =>
    Effect.gen(function*() {
      const dir = yield* Cli.tempDir
      const { home } = yield* Cli.initHomeInProcess(dir, "node")
      const token = (yield* Cli.runInProcess(["token", "create", "--home", home, "--scope", "demo"])).stdout.trim()
      const node = yield* Cli.startNode(home, ["--ws-listen", "127.0.0.1:0", "--demo"])
      const pid = node.child.pid!
      const client = yield* CallClient.connect(node.ws!, {
        expectedFingerprint: node.fingerprint,
        token: Redacted.make(token)
      })
      expect(yield* client.call("node/ping", {})).toMatchObject({ pong: true })

      let peak = rss(pid)
      const sampler = yield* Effect.fork(Effect.forever(Effect.zipRight(
        Effect.sync(() => {
          peak = Math.max(peak, rss(pid))
        }),
        Effect.sleep("50 millis")
      )))
      const flooding = yield* Effect.fork(Effect.all(
        Array.from({ length: SOCKETS }, (_, i) => flood(node.ws!, i)),
        { concurrency: "unbounded" }
      ))
      // the well-behaved client is answered all along
      let answered = 0
      while (flooding.unsafePoll() === null) {
        expect(yield* client.call("node/ping", {})).toMatchObject({ pong: true })
        answered++
      }
      const results = yield* Fiber.join(flooding)
      yield* Fiber.interrupt(sampler)
      peak = Math.max(peak, rss(pid))

      for (const result of results) expect(result.answers).toBe(PER_SOCKET - 256)
      // all but what the node holds (at most 1,024 for this caller) were shed with OVERLOADED
      const shed = results.reduce((sum, r) => sum + r.overloaded, 0)
      expect(shed).toBeGreaterThanOrEqual(SOCKETS * PER_SOCKET - 1024)
      expect(answered).toBeGreaterThan(0)
      expect(peak).toBeLessThan(CEILING_BYTES)
      // and afterwards, the node is fine
      expect(yield* client.call("node/ping", {})).toMatchObject({ pong: true })
    }).pipe(Effect.scoped), { timeout: 300_000 })
})
