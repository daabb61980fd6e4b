/**
 * from_mcp against a real MCP server (the official SDK's `Server` over Streamable HTTP on 127.0.0.1, stateful
 * sessions, bearer-protected): a wrong token is `Unauthorized` at initialize; the tools are imported as
 * `math/*` mutations, re-exported with an access control, and a caller calls them through a node over QUIC — output
 * from `structuredContent`, `isError` as `MCP_TOOL_ERROR`, the ACL enforced (no confused deputy), and a call that
 * times out cancels the tool on the MCP server.
 */
import { describe, expect, it } from "@effect/vitest"
import { Server } from "@modelcontextprotocol/sdk/server/index.js"
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js"
import { CallToolRequestSchema, ListToolsRequestSchema } from "@modelcontextprotocol/sdk/types.js"
import { Deferred, Effect, Redacted } from "effect"
import type { Scope } from "effect"
import { randomUUID } from "node:crypto"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import * as Node from "../../src/layers/Node.js"
import * as CallClient from "../../src/layers/Client.js"
import * as FromMcp from "../../src/peer/FromMcp.js"
import * as IdentityStore from "../../src/services/IdentityStore.js"

const TOKEN = "s3cret-mcp-token"

/** The MCP server: `add` (structured), `fail` (isError), `wait` (until cancelled). */
const mcpServer = (cancelled: Deferred.Deferred<void>): Effect.Effect<string, never, Scope.Scope> =>
  Effect.gen(function*() {
    const makeServer = () => {
      const server = new Server({ name: "math", version: "1.0.0" }, { capabilities: { tools: {} } })
      server.setRequestHandler(ListToolsRequestSchema, () => ({
        tools: [
          {
            name: "add",
            description: "Adds two numbers",
            inputSchema: { type: "object", properties: { a: { type: "number" }, b: { type: "number" } }, required: ["a", "b"] },
            outputSchema: { type: "object", properties: { sum: { type: "number" } }, required: ["sum"] }
          },
          { name: "fail", inputSchema: { type: "object" } },
          { name: "wait", inputSchema: { type: "object" } }
        ]
      }))
      server.setRequestHandler(CallToolRequestSchema, async (request, extra) => {
        const args = (request.params.arguments ?? {}) as { a?: number; b?: number }
        switch (request.params.name) {
          case "add": {
            const sum = (args.a ?? 0) + (args.b ?? 0)
            return { content: [{ type: "text", text: String(sum) }], structuredContent: { sum } }
          }
          case "wait":
            await new Promise<void>((resolve) => extra.signal.addEventListener("abort", () => resolve(), { once: true }))
            Effect.runSync(Deferred.succeed(cancelled, undefined))
            return { content: [] }
          default:
            return { isError: true, content: [{ type: "text", text: "no can do" }] }
        }
      })
      return server
    }
    const sessions = new Map<string, StreamableHTTPServerTransport>()
    const http = Http.createServer((req, res) => {
      if (req.headers.authorization !== `Bearer ${TOKEN}`) {
        res.writeHead(401, { "www-authenticate": "Bearer" }).end()
        return
      }
      const id = req.headers["mcp-session-id"]
      let transport = typeof id === "string" ? sessions.get(id) : undefined
      const serve = async () => {
        if (transport === undefined) {
          const created: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
            sessionIdGenerator: () => randomUUID(),
            onsessioninitialized: (sessionId) => void sessions.set(sessionId, created)
          })
          transport = created
          await makeServer().connect(created)
        }
        await transport.handleRequest(req, res)
      }
      void serve()
    })
    yield* Effect.acquireRelease(
      Effect.async<void>((resume) => {
        http.listen(0, "127.0.0.1", () => resume(Effect.void))
      }),
      () =>
        Effect.async<void>((resume) => {
          for (const transport of sessions.values()) void transport.close()
          http.closeAllConnections()
          http.close(() => resume(Effect.void))
        })
    )
    return `http://127.0.0.1:${(http.address() as AddressInfo).port}/mcp`
  })

describe("from_mcp", () => {
  it.live("a wrong token is Unauthorized at initialize; an unreachable server is Transport", () =>
    Effect.gen(function*() {
      const url = yield* mcpServer(yield* Deferred.make<void>())
      const refused = yield* Effect.flip(FromMcp.connect({ url, token: Redacted.make("wrong") }))
      expect(refused).toMatchObject({ reason: "Unauthorized", message: `MCP server ${url} refused us (HTTP 401)` })
      expect(refused.message).not.toContain("wrong")
      const none = yield* Effect.flip(FromMcp.connect({ url: "http://127.0.0.1:1/mcp" }))
      expect(none.reason).toBe("Transport")
    }).pipe(Effect.scoped))

  it.live("imported tools are re-exported with an access control and called through a node over QUIC", () =>
    Effect.gen(function*() {
      const cancelled = yield* Deferred.make<void>()
      const url = yield* mcpServer(cancelled)
      const remote = yield* FromMcp.connect({ url, token: Redacted.make(TOKEN) })
      const imported = yield* FromMcp.fromMcp(remote, {
        namespace: "math",
        visibility: "external",
        access: { requiredScopes: ["math"] }
      }).import()
      expect(imported.map((r) => [r.spec.name, r.spec.opType, r.provenance])).toEqual([
        ["math/add", "mutation", "FromMCP"],
        ["math/fail", "mutation", "FromMCP"],
        ["math/wait", "mutation", "FromMCP"]
      ])
      expect(imported[0]!.spec.inputJsonSchema).toMatchObject({ required: ["a", "b"] })
      // Internal unless re-exported.
      const internal = yield* FromMcp.fromMcp(remote, { namespace: "math" }).import()
      expect(internal.every((r) => r.spec.visibility === "internal")).toBe(true)

      yield* Effect.gen(function*() {
        const node = yield* Node.Node
        const quic = node.transports.find((t) => t.kind === "quic")!.address
        const store = yield* IdentityStore.IdentityStore
        const key = yield* store.createApiKey({ scopes: ["math"] })
        const client = yield* CallClient.connect(quic, { expectedFingerprint: node.fingerprint })
        const withKey = { authToken: key.token }

        expect(yield* client.call("math/add", { a: 2, b: 3 }, withKey)).toEqual({ sum: 5 })
        const failed = yield* Effect.flip(client.call("math/fail", {}, withKey))
        expect(failed).toMatchObject({ code: "MCP_TOOL_ERROR", message: "no can do", details: { content: [{ type: "text", text: "no can do" }] } })
        // The node's credential is not lent to anyone: the importer's access control applies.
        const anonymous = yield* Effect.flip(client.call("math/add", { a: 1, b: 1 }))
        expect(anonymous).toMatchObject({ code: "FORBIDDEN", message: "authentication required" })
        expect((yield* Effect.flip(client.call("math/add", 7, withKey))).code).toBe("INVALID_INPUT")

        // A call past its deadline cancels the tool on the MCP server.
        const timedOut = yield* Effect.flip(client.call("math/wait", {}, { ...withKey, timeout: "300 millis" }))
        expect(timedOut.code).toBe("TIMEOUT")
        yield* Deferred.await(cancelled)
      }).pipe(Effect.provide(Node.layerMemory({ operations: imported })))
    }).pipe(Effect.scoped), { timeout: 30_000 })
})
