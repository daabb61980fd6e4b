/**
 * The call-protocol WebSocket lives at `/alknet/call`: an upgrade to any other path is answered 404 before the upgrade
 * (and the listener keeps serving); the client dials the path itself when an address has none (`ws://HOST:PORT`, as
 * peers and the CLI write it), and dials an address with the path as written. (Live clock: closing a WebSocket
 * listener lets open connections drain on real time.)
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { WebSocket as RawWebSocket } from "ws"
import * as CallClient from "../../../src/layers/Client.js"
import * as WebSocket from "../../../src/layers/ws/WebSocket.js"
import * as CallProtocol from "../../../src/services/CallProtocol.js"
import * as Operation from "../../../src/services/Operation.js"
import * as OperationRegistry from "../../../src/services/OperationRegistry.js"

const echo = Operation.query({
  name: "demo/echo",
  input: Schema.Struct({ text: Schema.String }),
  output: Schema.Struct({ text: Schema.String }),
  handler: (input) => Effect.succeed(input)
})

/** A raw upgrade to `url`: the HTTP status and body when refused, `"opened"` when it became a WebSocket. */
const rawUpgrade = (url: string) =>
  Effect.async<{ readonly status: number; readonly body: string } | "opened">((resume) => {
    const ws = new RawWebSocket(url, { perMessageDeflate: false })
    ws.once("open", () => {
      ws.once("close", () => resume(Effect.succeed("opened")))
      ws.close()
    })
    ws.once("unexpected-response", (_request, response) => {
      const chunks: Array<Buffer> = []
      response.on("data", (chunk: Buffer) => chunks.push(chunk))
      response.once("end", () =>
        resume(Effect.succeed({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") })))
    })
    ws.once("error", (error) => resume(Effect.die(error)))
    return Effect.sync(() => ws.terminate())
  })

const listener = Effect.gen(function*() {
  const registry = yield* OperationRegistry.make([echo])
  return yield* WebSocket.listen({
    host: "127.0.0.1",
    port: 0,
    onConnection: CallProtocol.webSocketHandler({ source: registry.source })
  })
})

describe("the call-protocol WebSocket path", () => {
  it.live("an upgrade to another path is 404 before the upgrade; the listener keeps serving", () =>
    Effect.gen(function*() {
      const ws = yield* listener
      expect(ws.url).toMatch(/^ws:\/\/127\.0\.0\.1:\d+$/)
      for (const path of ["/", "/alknet", "/alknet/call/x", "/mcp"]) {
        expect(yield* rawUpgrade(`${ws.url}${path}`)).toEqual({
          status: 404,
          body: "not found: the call protocol is served at /alknet/call\n"
        })
      }
      expect(yield* ws.connections).toBe(0)
      // The right path (a query string does not matter) opens.
      expect(yield* rawUpgrade(`${ws.url}${WebSocket.CALL_PATH}`)).toBe("opened")
      expect(yield* rawUpgrade(`${ws.url}${WebSocket.CALL_PATH}?v=1`)).toBe("opened")
    }).pipe(Effect.scoped))

  it.live("the client appends /alknet/call to an address without a path, and keeps one that has it", () =>
    Effect.gen(function*() {
      const ws = yield* listener
      // `ws://HOST:PORT`, as peer configs and the CLI write it: the only way it can open is at /alknet/call.
      const bare = yield* CallClient.connect(ws.url)
      expect(yield* bare.call("demo/echo", { text: "bare" })).toEqual({ text: "bare" })
      const slash = yield* CallClient.connect(`${ws.url}/`)
      expect(yield* slash.call("demo/echo", { text: "slash" })).toEqual({ text: "slash" })
      const explicit = yield* WebSocket.connect(`${ws.url}${WebSocket.CALL_PATH}`)
      expect(explicit.remoteAddress.port).toBe(ws.address.port)
      // Another path is dialed as written (a reverse proxy's), so this server refuses it.
      const elsewhere = yield* Effect.flip(WebSocket.connect(`${ws.url}/somewhere`))
      expect(elsewhere.message).toContain("HTTP 404")
    }).pipe(Effect.scoped))
})
