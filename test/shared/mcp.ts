/**
 * A real MCP server for tests: the official SDK's `Server` over Streamable HTTP on 127.0.0.1 (stateful sessions),
 * refusing any request without `Authorization: Bearer TOKEN`.
 */
import { Server } from "@modelcontextprotocol/sdk/server/index.js"
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js"
import { CallToolRequestSchema, ListToolsRequestSchema } from "@modelcontextprotocol/sdk/types.js"
import { Deferred, Effect } from "effect"
import type { Scope } from "effect"
import { randomUUID } from "node:crypto"
import * as Http from "node:http"
import { listen } from "./http.js"

export const TOKEN = "s3cret-mcp-token"

/** The MCP server: `add` (structured), `fail` (isError), `wait` (until cancelled); `seen` gets each call's `_meta`. */
export const mcpServer = (
  cancelled: Deferred.Deferred<void>,
  seen: Array<unknown> = []
): Effect.Effect<string, never, Scope.Scope> =>
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
        seen.push(request.params._meta)
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
    const base = yield* listen(http)
    // Before the server closes (finalizers run in reverse): end the sessions.
    yield* Effect.addFinalizer(() => Effect.sync(() => sessions.forEach((transport) => void transport.close())))
    return `${base}/mcp`
  })
