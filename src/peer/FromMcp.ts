/**
 * `from_mcp` (SPEC §14): import an MCP server's tools (Streamable HTTP) as operations this node can compose and
 * re-export, with the official SDK's `Client`.
 *
 * - `connect(options)`: an MCP client session to `url`, closed with the scope. A bearer token (a `Redacted`, e.g. from
 *   the vault's credentials: never from config in clear) goes in `Authorization`; a server that answers 401 (or 403)
 *   at initialize is `AdapterError` `Unauthorized`, one that cannot be reached `Transport`.
 * - `fromMcp(remote, options)`: an adapter whose `import()` lists the tools and registers each as
 *   `${namespace}/${tool}`, a mutation (a tool may have effects), provenance `FromMCP`, no authority, no env,
 *   Internal by default. Re-exported (`visibility: "external"`), it must say who may call it (`access`): the node calls
 *   the server with its own credential, so an open export would lend that credential to anyone (a confused deputy).
 *
 * A call passes the input (an object: the tool's arguments) to `tools/call`. `structuredContent` is the output when
 * the tool returns it, else `{content}`; `isError` is the declared error `MCP_TOOL_ERROR` (HTTP 502 through the gateway)
 * with `{content}` as details. The remaining time to the call's deadline is the request's timeout, and an interrupted
 * call aborts its MCP request (the SDK sends `notifications/cancelled`).
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport, StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import type { Tool } from "@modelcontextprotocol/sdk/types.js"
import { Clock, Effect, Option, Redacted, Schema } from "effect"
import type { Scope } from "effect"
import * as AdapterError from "../errors/AdapterError.js"
import * as CallError from "../errors/CallError.js"
import * as Tracing from "../observability/Tracing.js"
import { isObject } from "../schema/JsonSchema.js"
import * as Operation from "../services/Operation.js"
import type { OperationAdapter } from "../services/OperationAdapter.js"

/** The code of a tool's own error (`isError: true`). */
export const TOOL_ERROR = "MCP_TOOL_ERROR"

export interface ConnectOptions {
  /** The server's Streamable HTTP endpoint, e.g. `http://127.0.0.1:3000/mcp`. */
  readonly url: string
  /** Sent as `Authorization: Bearer …`. */
  readonly token?: Redacted.Redacted<string>
  /** How we introduce ourselves (default `alknet`). */
  readonly clientName?: string
}

/** A connected MCP server. */
export interface McpRemote {
  readonly url: string
  readonly client: Client
}

const describe = (error: unknown) => (error instanceof Error ? error.message : String(error))

/** Connect to an MCP server; the session is closed with the scope. */
export const connect = (options: ConnectOptions): Effect.Effect<McpRemote, AdapterError.AdapterError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        const client = new Client({ name: options.clientName ?? "alknet", version: "0.1.0" })
        const transport = new StreamableHTTPClientTransport(new URL(options.url), {
          requestInit: options.token === undefined
            ? {}
            : { headers: { authorization: `Bearer ${Redacted.value(options.token)}` } }
        })
        await client.connect(transport)
        return { url: options.url, client }
      },
      catch: (error) =>
        error instanceof StreamableHTTPError && (error.code === 401 || error.code === 403)
          ? AdapterError.make("Unauthorized", `MCP server ${options.url} refused us (HTTP ${error.code})`)
          : AdapterError.make("Transport", `cannot connect to MCP server ${options.url}: ${describe(error)}`)
    }),
    (remote) => Effect.promise(() => remote.client.close().catch(() => undefined))
  )

export type FromMcpOptions =
  & {
    /** Registered as `${namespace}/${tool}`. */
    readonly namespace: string
    /** Import only the tools that pass (default: all). */
    readonly toolFilter?: (tool: Tool) => boolean
  }
  & (
    | { readonly visibility?: "internal" }
    | {
      /** Served to this node's callers, who must pass `access` (the server is called with the node's credential). */
      readonly visibility: "external"
      readonly access: Operation.AccessControlInput
    }
  )

const toolError = Operation.error({
  code: TOOL_ERROR,
  description: "the MCP tool reported an error; details.content is what it said",
  httpStatus: 502
})

/** The forwarding handler of one tool. */
const forwarder = (remote: McpRemote, tool: string): Operation.Handler => ({
  _tag: "Unary",
  run: (input, ctx) =>
    Effect.gen(function*() {
      if (input !== null && !isObject(input)) {
        return yield* CallError.invalidInput("invalid input: expected an object (the tool's arguments)")
      }
      const now = yield* Clock.currentTimeMillis
      const timeout = Option.map(ctx.deadline, (deadline) => deadline - now)
      if (Option.isSome(timeout) && timeout.value <= 0) return yield* CallError.timeout()
      // The call continues the caller's trace: `traceparent` / `tracestate` in the request's `_meta` (MCP's names).
      const result = yield* Tracing.around(ctx.operation, "client", (span) => {
        const meta: Record<string, unknown> = {}
        if (span !== undefined) Tracing.inject(meta, span)
        return Effect.tryPromise({
          try: (signal) =>
            remote.client.callTool(
              { name: tool, arguments: (input ?? {}) as Record<string, unknown>, ...(span === undefined ? {} : { _meta: meta }) },
              undefined,
              { signal, ...(Option.isSome(timeout) ? { timeout: timeout.value } : {}) }
            ),
          catch: (error) =>
            /timed out/i.test(describe(error))
              ? CallError.timeout()
              : CallError.internal(`MCP server ${remote.url}: tools/call ${tool} failed: ${describe(error)}`)
        })
      })
      if (result.isError === true) {
        const text = Array.isArray(result.content)
          ? result.content.map((c) => (isObject(c) && typeof c.text === "string" ? c.text : "")).join(" ").trim()
          : ""
        return yield* CallError.domain(TOOL_ERROR, text === "" ? `tool ${tool} failed` : text, { content: result.content })
      }
      return result.structuredContent !== undefined ? result.structuredContent : { content: result.content }
    })
})

/** `from_mcp(remote, options)`: an adapter importing the server's tools. */
export const fromMcp = (remote: McpRemote, options: FromMcpOptions): OperationAdapter => ({
  description: `from_mcp ${remote.url}`,
  import: () =>
    Effect.gen(function*() {
      const tools: Array<Tool> = []
      let cursor: string | undefined
      do {
        const page = yield* Effect.tryPromise({
          try: () => remote.client.listTools(cursor === undefined ? {} : { cursor }),
          catch: (error) => AdapterError.make("DiscoveryFailed", `MCP server ${remote.url}: tools/list failed: ${describe(error)}`)
        })
        tools.push(...page.tools)
        cursor = page.nextCursor
      } while (cursor !== undefined)
      const seen = new Set<string>()
      const registrations: Array<Operation.HandlerRegistration> = []
      for (const tool of tools) {
        if (options.toolFilter !== undefined && !options.toolFilter(tool)) continue
        const name = `${options.namespace}/${tool.name}`
        if (seen.has(name)) return yield* AdapterError.make("SamePeerCollision", `MCP server ${remote.url} serves ${tool.name} twice`)
        seen.add(name)
        const registration = yield* Effect.try({
          try: () => {
            const spec = Operation.makeSpec("mutation", {
              name,
              description: tool.description ?? tool.title ?? `MCP tool ${tool.name}`,
              input: Schema.Unknown,
              output: Schema.Unknown,
              inputJsonSchema: tool.inputSchema as Record<string, unknown>,
              outputJsonSchema: (tool.outputSchema ?? {}) as Record<string, unknown>,
              errors: [toolError],
              ...(options.visibility === "external" ? { access: options.access } : {})
            })
            return Operation.registration(spec, forwarder(remote, tool.name), {
              provenance: "FromMCP",
              visibility: options.visibility ?? "internal"
            })
          },
          catch: (error) => AdapterError.make("SchemaParse", `MCP server ${remote.url}: cannot import tool ${tool.name}: ${describe(error)}`)
        })
        registrations.push(registration)
      }
      return registrations
    })
})
