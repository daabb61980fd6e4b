/**
 * The gateway inside a node (`Node.layerMemory` with `webSocket.gateway`): the same port serves HTTP and the
 * call-protocol WebSocket; bearer tokens are the node's API keys; over https a client certificate is resolved like a
 * QUIC peer's; failed tokens count towards the address's cooldown (then 429); one caller's calls in flight count
 * once, over HTTP and the wire together.
 */
import { describe, expect, it } from "@effect/vitest"
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import { Effect, Fiber, Queue, Redacted, Schema } from "effect"
import * as Node from "../../../src/layers/Node.js"
import * as CallClient from "../../../src/services/CallClient.js"
import * as IdentityStore from "../../../src/services/IdentityStore.js"
import * as Operation from "../../../src/services/Operation.js"
import { httpsPost, post } from "../../shared/http.js"
import * as Tls from "../../../src/services/Tls.js"

const hello = Operation.query({
  name: "demo/hello",
  input: Schema.Struct({ name: Schema.String }),
  output: Schema.String,
  access: { requiredScopes: ["demo"] },
  handler: ({ name }) => Effect.succeed(`hello, ${name}`)
})

const httpOf = (wsUrl: string) => wsUrl.replace(/^ws/, "http")

describe("Node with the HTTP gateway", () => {
  it.live("one port: HTTP calls with the node's API keys, and the call protocol over WebSocket", () =>
    Effect.gen(function*() {
      const node = yield* Node.Node
      const ws = node.transports.find((t) => t.kind === "ws")!.address
      const url = httpOf(ws)
      const store = yield* IdentityStore.IdentityStore
      const key = yield* store.createApiKey({ scopes: ["demo"] })
      const token = Redacted.value(key.token)

      expect(yield* post(`${url}/call`, { operation: "node/whoami" })).toMatchObject({ status: 200, body: { output: { identity: null } } })
      const whoami = yield* post(`${url}/call`, { operation: "node/whoami" }, token)
      expect(whoami.body.output.identity).toMatchObject({ id: key.entry.prefix, scopes: ["demo"] })
      expect(yield* post(`${url}/call/demo/hello`, { name: "web" })).toMatchObject({ status: 401 })
      expect(yield* post(`${url}/call/demo/hello`, { name: "web" }, token)).toMatchObject({ status: 200, body: { output: "hello, web" } })
      // The document lists what the caller may call.
      const doc = yield* Effect.promise(() => fetch(`${url}/openapi.json`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.json() as any))
      expect(Object.keys(doc.paths)).toContain("/call/demo/hello")

      // MCP at /mcp, on by default with the gateway: the API key is the caller.
      const mcp = yield* Effect.acquireRelease(
        Effect.promise(async () => {
          const client = new Client({ name: "test", version: "1.0.0" })
          await client.connect(new StreamableHTTPClientTransport(new URL(`${url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${token}` } } }))
          return client
        }),
        (client) => Effect.promise(() => client.close())
      )
      const tools = (yield* Effect.promise(() => mcp.listTools())).tools.map((t) => t.name)
      expect(tools).toEqual(expect.arrayContaining(["demo.hello", "node.whoami"]))
      const greeted = yield* Effect.promise(() => mcp.callTool({ name: "demo.hello", arguments: { name: "mcp" } }))
      expect(greeted.content).toEqual([{ type: "text", text: JSON.stringify("hello, mcp") }])

      // The same port still speaks the call protocol over WebSocket.
      const client = yield* CallClient.connect(ws, { token: key.token })
      expect(yield* client.call("demo/hello", { name: "ws" })).toBe("hello, ws")
    }).pipe(
      Effect.scoped,
      Effect.provide(Node.layerMemory({ operations: [hello], webSocket: { host: "127.0.0.1", port: 0, tls: false, gateway: true } }))
    ))

  it.live("over https a client certificate is the caller, like a QUIC peer; bad tokens lead to 429", () =>
    Effect.gen(function*() {
      const node = yield* Node.Node
      const url = httpOf(node.transports.find((t) => t.kind === "wss")!.address)
      const seed = new Uint8Array(32).fill(9)
      const client = yield* Tls.load(Tls.RawKey(seed))
      const store = yield* IdentityStore.IdentityStore
      yield* store.putPeer({ peer_id: "alice", fingerprints: [client.fingerprint], scopes: ["demo"], resources: {}, enabled: true })

      expect(yield* httpsPost(`${url}/call/demo/hello`, { name: "anon" })).toMatchObject({ status: 401 })
      expect(yield* httpsPost(`${url}/call/demo/hello`, { name: "alice" }, { client })).toMatchObject({ status: 200, body: { output: "hello, alice" } })

      // Three unknown tokens from 127.0.0.1 (max_auth_failures_per_ip = 3): the address cools down, for every client.
      for (let i = 0; i < 3; i++) {
        // An unknown token is anonymous: the call is answered, and the failure counted.
        expect(yield* httpsPost(`${url}/call`, { operation: "node/ping" }, { token: `alk_guess-${i}` })).toMatchObject({ status: 200 })
      }
      const refused = yield* httpsPost(`${url}/call/demo/hello`, { name: "alice" }, { client })
      expect(refused).toMatchObject({ status: 429, body: { code: "TOO_MANY_REQUESTS" } })
      expect(Number(refused.headers["retry-after"])).toBeGreaterThan(590)
    }).pipe(
      Effect.scoped,
      Effect.provide(Node.layerMemory({
        operations: [hello],
        webSocket: { host: "127.0.0.1", port: 0, gateway: { maxBodyBytes: 4096 } },
        config: { rate_limits: { max_auth_failures_per_ip: 3, auth_failure_window_ms: 600_000, auth_block_ms: 600_000 } }
      }))
    ))
  it.live("one in-flight limit per caller over the wire and HTTP: at its limit on one, OVERLOADED on the other", () =>
    Effect.gen(function*() {
      // demo/hold says it started, then waits for one release each.
      const started = yield* Queue.unbounded<void>()
      const releases = yield* Queue.unbounded<void>()
      const hold = Operation.query({
        name: "demo/hold",
        input: Schema.Struct({}),
        output: Schema.String,
        handler: () => Effect.zipRight(Queue.offer(started, undefined), Effect.as(Queue.take(releases), "released"))
      })
      // Wait until the held call started; one answered before that fails the test with its answer.
      const startedOrAnswered = <A, E>(call: Fiber.Fiber<A, E>) =>
        Effect.raceFirst(
          Queue.take(started),
          Effect.flatMap(Fiber.await(call), (exit) => Effect.dieMessage(`answered before it started: ${String(exit)}`))
        )
      yield* Effect.gen(function*() {
        const node = yield* Node.Node
        const ws = node.transports.find((t) => t.kind === "ws")!.address
        const url = httpOf(ws)
        const store = yield* IdentityStore.IdentityStore
        const key = yield* store.createApiKey({ scopes: ["demo"] })
        const token = Redacted.value(key.token)
        const wire = yield* CallClient.connect(ws, { token: key.token })

        // The caller's one call in flight is on the wire: over HTTP it is 503 OVERLOADED.
        const onWire = yield* Effect.fork(wire.call("demo/hold", {}))
        yield* startedOrAnswered(onWire)
        expect(yield* post(`${url}/call`, { operation: "node/ping" }, token)).toMatchObject({
          status: 503,
          body: { code: "OVERLOADED", retryable: true }
        })
        // Another caller (anonymous) is not held back by it.
        expect(yield* post(`${url}/call`, { operation: "node/ping" })).toMatchObject({ status: 200 })
        yield* Queue.offer(releases, undefined)
        expect(yield* Fiber.join(onWire)).toBe("released")
        // The slot is given back: HTTP gets in.
        expect(yield* post(`${url}/call`, { operation: "node/ping" }, token)).toMatchObject({ status: 200 })

        // The other way round: the call in flight is over HTTP, the wire is refused.
        const overHttp = yield* Effect.fork(post(`${url}/call`, { operation: "demo/hold", input: {} }, token))
        yield* startedOrAnswered(overHttp)
        const refused = yield* Effect.flip(wire.call("node/ping", {}))
        expect(refused).toMatchObject({ code: "OVERLOADED", retryable: true })
        yield* Queue.offer(releases, undefined)
        expect(yield* Fiber.join(overHttp)).toMatchObject({ status: 200, body: { output: "released" } })
        expect(yield* wire.call("node/ping", {})).toMatchObject({ pong: true })
      }).pipe(
        Effect.scoped,
        Effect.provide(Node.layerMemory({
          operations: [hello, hold],
          webSocket: { host: "127.0.0.1", port: 0, tls: false, gateway: true },
          config: { rate_limits: { max_calls_per_caller: 1 } }
        }))
      )
    }))
})
