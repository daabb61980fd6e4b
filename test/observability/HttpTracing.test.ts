/**
 * Traces over HTTP: a `traceparent` header on a gateway request continues its trace (calls and SSE subscriptions; a
 * malformed one is ignored), as does an MCP tool call's `_meta.traceparent` through to_mcp, and operations imported with from_openapi and from_mcp send the caller's trace on (HTTP
 * headers; the MCP request's `_meta`).
 */
import { describe, expect, it } from "@effect/vitest"
import { Client as McpClient } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import { Deferred, Effect, Redacted, Schema, Stream } from "effect"
import * as Http from "node:http"
import * as Discovery from "../../src/call/Discovery.js"
import * as Gateway from "../../src/layers/http/Gateway.js"
import * as FromMcp from "../../src/peer/FromMcp.js"
import * as FromOpenApi from "../../src/peer/FromOpenApi.js"
import * as Operation from "../../src/services/Operation.js"
import * as OperationRegistry from "../../src/services/OperationRegistry.js"
import { listen } from "../shared/http.js"
import { mcpServer, TOKEN } from "../shared/mcp.js"
import { finished, Kind, recording } from "../shared/spans.js"

const TRACE = "0af7651916cd43dd8448eb211c80319c"
const PARENT = "b7ad6b7169203331"
const { SERVER } = Kind

const operations = [
  Operation.query({
    name: "demo/echo",
    input: Schema.Unknown,
    output: Schema.Unknown,
    handler: (input) => Effect.succeed(input)
  }),
  Operation.subscription({
    name: "demo/count",
    input: Schema.Struct({ n: Schema.Int }),
    output: Schema.Int,
    handler: ({ n }) => Stream.range(1, n)
  })
]

const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  Effect.promise(async () => {
    const response = await fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) })
    return { status: response.status, text: await response.text() }
  })

describe("traces over HTTP", () => {
  it.live("a traceparent header on POST /call and POST /subscribe continues the trace; a malformed one is ignored", () => {
    const { exporter, layer } = recording()
    return Effect.gen(function*() {
      const gateway = yield* Gateway.make({ source: Discovery.withDiscovery(OperationRegistry.sourceOf(operations)) })
      const url = yield* listen(Http.createServer(gateway.handler))
      const traceparent = `00-${TRACE}-${PARENT}-01`

      expect((yield* post(`${url}/call`, { operation: "demo/echo", input: 1 }, { traceparent })).status).toBe(200)
      const call = yield* finished(exporter, (s) => s.name === "demo/echo")
      expect(call.kind).toBe(SERVER)
      expect(call.spanContext().traceId).toBe(TRACE)
      expect(call.parentSpanContext?.spanId).toBe(PARENT)
      expect(call.attributes["alknet.code"]).toBe("OK")

      const sse = yield* post(`${url}/subscribe`, { operation: "demo/count", input: { n: 3 } }, { traceparent })
      expect(sse.text).toContain("event: completed")
      const subscription = yield* finished(exporter, (s) => s.name === "demo/count")
      expect(subscription.spanContext().traceId).toBe(TRACE)
      expect(subscription.parentSpanContext?.spanId).toBe(PARENT)

      exporter.reset()
      const refused = yield* post(`${url}/call`, { operation: "demo/echo", input: 2 }, { traceparent: "00-nope-nope-01" })
      expect(refused.status).toBe(200)
      const fresh = yield* finished(exporter, (s) => s.name === "demo/echo")
      expect(fresh.spanContext().traceId).not.toBe(TRACE)
      expect(fresh.parentSpanContext).toBeUndefined()
    }).pipe(Effect.provide(layer), Effect.scoped)
  })

  it.live("an operation imported with from_openapi sends the caller's trace to the REST API", () => {
    const { exporter, layer } = recording()
    return Effect.gen(function*() {
      const seen: Array<string | undefined> = []
      const api = Http.createServer((request, response) => {
        seen.push(request.headers.traceparent as string | undefined)
        response.writeHead(200, { "content-type": "application/json" })
        response.end(JSON.stringify({ ok: true }))
      })
      const base = yield* listen(api)
      const document = yield* FromOpenApi.parse(JSON.stringify({
        openapi: "3.1.0",
        info: { title: "t", version: "1" },
        paths: { "/ping": { get: { operationId: "ping", responses: { "200": { description: "ok" } } } } }
      }))
      const imported = yield* FromOpenApi.fromOpenApi(document, { namespace: "api", baseUrl: base, visibility: "external", access: {} }).import()
      const registry = yield* OperationRegistry.make(imported)
      yield* registry.invoke("api/ping", {}).pipe(Effect.withSpan("test/root"))
      const root = yield* finished(exporter, (s) => s.name === "test/root")
      const client = yield* finished(exporter, (s) => s.name === "api/ping" && s.kind === Kind.CLIENT)
      expect(seen).toHaveLength(1)
      // The API sees the trace of the root, with the request's own client span as its parent.
      expect(seen[0]).toBe(`00-${root.spanContext().traceId}-${client.spanContext().spanId}-01`)
    }).pipe(Effect.provide(layer), Effect.scoped)
  })

  it.live("a tool imported with from_mcp gets the caller's trace in the request's _meta", () => {
    const { exporter, layer } = recording()
    return Effect.gen(function*() {
      const seen: Array<any> = []
      const url = yield* mcpServer(yield* Deferred.make<void>(), seen)
      const remote = yield* FromMcp.connect({ url, token: Redacted.make(TOKEN) })
      const imported = yield* FromMcp.fromMcp(remote, { namespace: "math", visibility: "external", access: {} }).import()
      const registry = yield* OperationRegistry.make(imported)
      expect(yield* registry.invoke("math/add", { a: 1, b: 2 }).pipe(Effect.withSpan("test/root"))).toEqual({ sum: 3 })
      const root = yield* finished(exporter, (s) => s.name === "test/root")
      const client = yield* finished(exporter, (s) => s.name === "math/add" && s.kind === Kind.CLIENT)
      expect(seen).toHaveLength(1)
      expect(seen[0]?.traceparent).toBe(`00-${root.spanContext().traceId}-${client.spanContext().spanId}-01`)
    }).pipe(Effect.provide(layer), Effect.scoped)
  })

  it.live("an MCP client's tools/call with _meta.traceparent continues its trace through to_mcp", () => {
    const { exporter, layer } = recording()
    return Effect.gen(function*() {
      const gateway = yield* Gateway.make({ source: Discovery.withDiscovery(OperationRegistry.sourceOf(operations)), mcp: true })
      const url = yield* listen(Http.createServer(gateway.handler))
      const client = yield* Effect.acquireRelease(
        Effect.promise(async () => {
          const client = new McpClient({ name: "alknet-test", version: "1.0.0" })
          await client.connect(new StreamableHTTPClientTransport(new URL(`${url}/mcp`)))
          return client
        }),
        (client) => Effect.promise(() => client.close())
      )
      const result = yield* Effect.promise(() =>
        client.callTool({ name: "demo.echo", arguments: { input: 7 }, _meta: { traceparent: `00-${TRACE}-${PARENT}-01` } })
      )
      expect(result.isError).not.toBe(true)
      const served = yield* finished(exporter, (s) => s.name === "demo/echo" && s.kind === SERVER)
      expect(served.spanContext().traceId).toBe(TRACE)
      expect(served.parentSpanContext?.spanId).toBe(PARENT)
    }).pipe(Effect.provide(layer), Effect.scoped)
  })
})
