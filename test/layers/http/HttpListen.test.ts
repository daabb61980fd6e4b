/**
 * The HTTP gateway on a listener of its own (`Node.layerHttp`, the config's `http_listen` / `http_tls`): plain http
 * when asked, else https with the node's TLS identity (the same fingerprint as its QUIC endpoint); it serves HTTP
 * only (an upgrade is 404) and sits beside the WebSocket listener, which keeps the call protocol and its own gateway.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Deferred, Effect, Exit, Fiber, Layer, Redacted, Schema, Scope } from "effect"
import * as Net from "node:net"
import { WebSocket as RawWebSocket } from "ws"
import * as CallClient from "../../../src/layers/Client.js"
import * as Node from "../../../src/layers/Node.js"
import * as IdentityStore from "../../../src/services/IdentityStore.js"
import * as Operation from "../../../src/services/Operation.js"
import { httpsPost, post } from "../../shared/http.js"

const hello = Operation.query({
  name: "demo/hello",
  input: Schema.Struct({ name: Schema.String }),
  output: Schema.String,
  access: { requiredScopes: ["demo"] },
  handler: ({ name }) => Effect.succeed(`hello, ${name}`)
})

/** Whether a TCP connection to 127.0.0.1:port is refused (the listener no longer accepts). */
const refused = (port: number) =>
  Effect.async<boolean>((resume) => {
    const socket = Net.connect(port, "127.0.0.1")
    socket.once("connect", () => {
      socket.destroy()
      resume(Effect.succeed(false))
    })
    socket.once("error", () => resume(Effect.succeed(true)))
  })

/** The status of a raw WebSocket upgrade to `url` (`101` when it opened). */
const upgradeStatus = (url: string) =>
  Effect.async<number>((resume) => {
    const ws = new RawWebSocket(url, { perMessageDeflate: false, rejectUnauthorized: false })
    ws.once("open", () => {
      ws.once("close", () => resume(Effect.succeed(101)))
      ws.close()
    })
    ws.once("unexpected-response", (_request, response) => {
      response.resume()
      response.once("end", () => resume(Effect.succeed(response.statusCode ?? 0)))
    })
    ws.once("error", (error) => resume(Effect.die(error)))
    return Effect.sync(() => ws.terminate())
  })

describe("the HTTP gateway on its own listener", () => {
  it.live("http_listen with http_tls false: plain http, beside the WebSocket listener; upgrades are 404 there", () =>
    Effect.gen(function*() {
      const node = yield* Node.Node
      expect(node.transports.map((t) => t.kind).sort()).toEqual(["http", "quic", "ws"])
      const url = node.transports.find((t) => t.kind === "http")!.address
      const ws = node.transports.find((t) => t.kind === "ws")!.address
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
      expect(url).not.toBe(ws.replace(/^ws/, "http"))

      const key = yield* (yield* IdentityStore.IdentityStore).createApiKey({ scopes: ["demo"] })
      expect(yield* Effect.promise(() => fetch(`${url}/healthz`).then((r) => r.json()))).toEqual({ status: "ok" })
      expect(yield* post(`${url}/call/demo/hello`, { name: "web" })).toMatchObject({ status: 401 })
      expect(yield* post(`${url}/call/demo/hello`, { name: "web" }, Redacted.value(key.token))).toMatchObject({
        status: 200,
        body: { result: "ok", output: "hello, web" }
      })

      // The call protocol is the WebSocket listener's: the HTTP listener answers an upgrade 404 and keeps serving.
      expect(yield* upgradeStatus(`${url.replace(/^http/, "ws")}/alknet/call`)).toBe(404)
      expect(yield* post(`${url}/call`, { operation: "node/ping" })).toMatchObject({ status: 200 })
      const client = yield* CallClient.connect(ws)
      expect(yield* client.call("node/ping", {})).toMatchObject({ pong: true })
      // The WebSocket port serves no gateway here (it was not asked for).
      expect((yield* Effect.promise(() => fetch(`${ws.replace(/^ws/, "http")}/healthz`))).status).toBe(426)
    }).pipe(
      Effect.scoped,
      Effect.provide(Node.layerMemory({
        operations: [hello],
        config: { http_listen: "127.0.0.1:0", http_tls: false },
        webSocket: { host: "127.0.0.1", port: 0, tls: false }
      }))
    ))

  it.live("https by default, with the node's TLS identity; an option overrides the config", () =>
    Effect.gen(function*() {
      const node = yield* Node.Node
      const url = node.transports.find((t) => t.kind === "https")!.address
      expect(url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/)
      const answer = yield* httpsPost(`${url}/call`, { operation: "node/info" })
      expect(answer).toMatchObject({ status: 200, body: { output: { id: node.fingerprint } } })
      expect(answer.fingerprint).toBe(node.fingerprint)
    }).pipe(
      // The config names a port that would collide with nothing: the option wins (port 0).
      Effect.provide(Node.layerMemory({ config: { http_listen: "127.0.0.1:1" }, http: { listen: { host: "127.0.0.1", port: 0 } } }))
    ))

  it.live("without http_listen there is no HTTP listener", () =>
    Effect.gen(function*() {
      const node = yield* Node.Node
      expect(node.transports.map((t) => t.kind)).toEqual(["quic"])
    }).pipe(Effect.provide(Node.layerMemory())))
})

describe("closing the HTTP listener", () => {
  it.live("stops accepting, lets a request in flight finish (drain), then closes", () =>
    Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const slow = Operation.query({
        name: "demo/slow",
        input: Schema.Unknown,
        output: Schema.String,
        handler: () => Effect.zipRight(Deferred.succeed(started, undefined), Effect.as(Deferred.await(release), "done"))
      })
      const scope = yield* Scope.make()
      const node = yield* Layer.buildWithScope(
        Node.layerMemory({ operations: [slow], config: { http_listen: "127.0.0.1:0", http_tls: false, drain_timeout_ms: 60_000 } }),
        scope
      ).pipe(Effect.map(Context.get(Node.Node)))
      const url = node.transports.find((t) => t.kind === "http")!.address
      const inFlight = yield* Effect.fork(post(`${url}/call/demo/slow`, {}))
      yield* Deferred.await(started)
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      // The listener stops accepting first: wait until a new connection is refused.
      const port = Number(new URL(url).port)
      yield* Effect.repeat(refused(port), { until: (yes) => yes })
      // The call in flight still gets its answer, then the node finishes closing.
      yield* Deferred.succeed(release, undefined)
      expect(yield* Fiber.join(inFlight)).toMatchObject({ status: 200, body: { output: "done" } })
      yield* Fiber.join(closing)
    }))
})
