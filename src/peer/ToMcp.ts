/**
 * `to_mcp` (SPEC §14): a node's operations as MCP tools, with the official MCP SDK's low-level `Server` (it takes
 * tools as plain JSON Schema, which is what the registry has for every operation, imported ones included; the SDK's
 * high-level `McpServer` wants a zod schema per tool). The HTTP side (Streamable HTTP at `/mcp`, bearer auth) is the
 * gateway's (`layers/http/Gateway`); this module only says what the tools are and what calling one does, for one
 * caller.
 *
 * Two shapes (`mode`):
 * - `"operations"` (default): one tool per External query or mutation the caller may call. The tool's name is the
 *   operation's with `/` → `.` (MCP tool names are `[A-Za-z0-9_.-]`), its input schema the operation's when that is an
 *   object schema (or accepts anything: then the arguments object is the input), else `{input: <schema>}`; its output schema the operation's when that is an object schema (then the
 *   result carries `structuredContent`). Subscriptions are not tools.
 * - `"generic"`: the reference's four tools, for a large registry: `search {query?}`, `schema {name}`,
 *   `call {operation, input}`, `batch {calls: [{operation, input}]}`.
 *
 * A failed call is a tool result with `isError: true` and the CallError JSON (`{code, message, retryable, details?}`)
 * as its text. `$id`s are removed from the schemas (Effect emits a duplicate `/schemas/unknown` per `Schema.Unknown`,
 * which JSON Schema validators reject).
 */
import { Server } from "@modelcontextprotocol/sdk/server/index.js"
import { CallToolRequestSchema, ListToolsRequestSchema } from "@modelcontextprotocol/sdk/types.js"
import type { CallToolResult, Tool } from "@modelcontextprotocol/sdk/types.js"
import { isObject, type JsonObject, withoutIds } from "../schema/JsonSchema.js"
import type * as Operation from "../services/Operation.js"

export type Mode = "operations" | "generic"

/** The outcome of a call, as the caller would see it. */
export type Outcome =
  | { readonly ok: true; readonly output: unknown }
  | { readonly ok: false; readonly error: { readonly code: string; readonly message: string; readonly retryable: boolean; readonly details?: unknown } }

/** What the MCP server does for one caller; the gateway supplies it with the caller's identity bound in. */
export interface Backend {
  /** The External operations this caller may call (what is listed). */
  readonly operations: () => Iterable<Operation.OperationSpec>
  /**
   * Every External operation: a tool is called by its name even when it was not listed, so the dispatch answers
   * (FORBIDDEN, as `POST /call` would) rather than the tool mapping.
   */
  readonly external: () => Iterable<Operation.OperationSpec>
  /**
   * Call an operation through the node's dispatch (interrupted when `signal` aborts: the client went away). `meta` is
   * the tool call's `_meta`: a `traceparent` / `tracestate` there continues the client's trace.
   */
  readonly call: (operation: string, input: unknown, signal: AbortSignal, meta?: Record<string, unknown>) => Promise<Outcome>
}

export interface Options {
  readonly mode?: Mode
  /** Largest `batch` (default 64 calls). */
  readonly maxBatch?: number
  readonly name?: string
  readonly version?: string
}

/** Still exported here, as before: the copy of a JSON Schema without `$id` / `$schema` (now in `schema/JsonSchema.ts`). */
export { withoutIds }

const isObjectSchema = (schema: JsonObject) => schema.type === "object"

/** A tool and how its arguments become the operation's input. */
interface OperationTool {
  readonly tool: Tool
  readonly operation: string
  /** The arguments are `{input}` (the operation's input is not an object). */
  readonly wrapped: boolean
  readonly structured: boolean
}

const toolName = (operation: string) => operation.replace(/\//g, ".").replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 128)

/** The per-operation tools for a caller, by tool name (a name two operations map to gets a numeric suffix). */
export const operationTools = (specs: Iterable<Operation.OperationSpec>): Map<string, OperationTool> => {
  const tools = new Map<string, OperationTool>()
  for (const spec of specs) {
    if (spec.opType === "subscription") continue
    let name = toolName(spec.name)
    for (let i = 2; tools.has(name); i++) name = `${toolName(spec.name).slice(0, 120)}_${i}`
    const input = withoutIds(spec.inputJsonSchema) as JsonObject
    const output = withoutIds(spec.outputJsonSchema) as JsonObject
    // Anything goes (Schema.Unknown: at most a title): the arguments object is the input.
    const anything = Object.keys(input).every((key) => key === "title" || key === "description")
    const wrapped = !anything && !isObjectSchema(input)
    const { $defs, ...inner } = input
    const inputSchema = wrapped
      ? {
        type: "object" as const,
        properties: { input: inner },
        ...(Object.keys(inner).length === 0 ? {} : { required: ["input"] }),
        ...($defs === undefined ? {} : { $defs })
      }
      : anything
      ? { type: "object" as const }
      : { ...input, type: "object" as const }
    const structured = isObjectSchema(output)
    tools.set(name, {
      operation: spec.name,
      wrapped,
      structured,
      tool: {
        name,
        title: spec.name,
        description: spec.description ?? `alknet operation ${spec.name} (${spec.opType})`,
        inputSchema,
        ...(structured ? { outputSchema: { ...output, type: "object" as const } } : {}),
        annotations: { readOnlyHint: spec.opType === "query" }
      }
    })
  }
  return tools
}

const genericTools: ReadonlyArray<Tool> = [
  {
    name: "search",
    description: "The operations you may call whose name or description contains `query` (all without it).",
    inputSchema: { type: "object", properties: { query: { type: "string" } } },
    annotations: { readOnlyHint: true }
  },
  {
    name: "schema",
    description: "The full spec of an operation you may call: input and output JSON Schema, declared errors.",
    inputSchema: { type: "object", properties: { name: { type: "string" } }, required: ["name"] },
    annotations: { readOnlyHint: true }
  },
  {
    name: "call",
    description: "Call a query or mutation by name with its input.",
    inputSchema: { type: "object", properties: { operation: { type: "string" }, input: {} }, required: ["operation"] }
  },
  {
    name: "batch",
    description: "Several calls at once; one result (output or error) per call, in order.",
    inputSchema: {
      type: "object",
      properties: {
        calls: {
          type: "array",
          items: { type: "object", properties: { operation: { type: "string" }, input: {} }, required: ["operation"] }
        }
      },
      required: ["calls"]
    }
  }
]

const text = (value: unknown) => [{ type: "text" as const, text: JSON.stringify(value) }]

const errorResult = (error: Extract<Outcome, { ok: false }>["error"]): CallToolResult => ({ isError: true, content: text(error) })

const invalidArguments = (message: string): CallToolResult =>
  errorResult({ code: "INVALID_INPUT", message, retryable: false })

/** What the SDK tells a request handler about its request (the gateway puts the caller in `authInfo.extra`). */
export type RequestExtra = Parameters<Parameters<Server["setRequestHandler"]>[1]>[1]

/**
 * An MCP server (not yet connected to a transport) serving operations as tools. `backend` is a `Backend`, or picks
 * one per request (a session serves requests that each carry their own caller).
 */
export const makeServer = (backend: Backend | ((extra: RequestExtra) => Backend), options: Options = {}): Server => {
  const backendOf = typeof backend === "function" ? backend : () => backend
  const mode = options.mode ?? "operations"
  const server = new Server(
    { name: options.name ?? "alknet", version: options.version ?? "0.1.0" },
    { capabilities: { tools: {} } }
  )
  server.setRequestHandler(ListToolsRequestSchema, (_, extra) => ({
    tools: mode === "generic" ? [...genericTools] : [...operationTools(backendOf(extra).operations()).values()].map((t) => t.tool)
  }))
  server.setRequestHandler(CallToolRequestSchema, async (request, extra): Promise<CallToolResult> => {
    const backend = backendOf(extra)
    const args: JsonObject = request.params.arguments ?? {}
    const signal = extra.signal
    const meta = request.params._meta
    if (mode === "operations") {
      const found = operationTools(backend.external()).get(request.params.name)
      if (found === undefined) {
        return errorResult({ code: "NOT_FOUND", message: `tool not found: ${request.params.name.slice(0, 200)}`, retryable: false })
      }
      const input = found.wrapped ? (args.input ?? null) : args
      const outcome = await backend.call(found.operation, input, signal, meta)
      if (!outcome.ok) return errorResult(outcome.error)
      return found.structured && isObject(outcome.output)
        ? { content: text(outcome.output), structuredContent: outcome.output }
        : { content: text(outcome.output) }
    }
    switch (request.params.name) {
      case "search": {
        const query = typeof args.query === "string" ? args.query.toLowerCase() : ""
        const operations = []
        for (const spec of backend.operations()) {
          if (query !== "" && !spec.name.toLowerCase().includes(query) && !(spec.description ?? "").toLowerCase().includes(query)) continue
          operations.push({ name: spec.name, description: spec.description ?? null, type: spec.opType })
        }
        return { content: text({ operations }) }
      }
      case "schema": {
        if (typeof args.name !== "string") return invalidArguments("missing required field: name")
        const outcome = await backend.call("services/schema", { name: args.name }, signal)
        return outcome.ok ? { content: text(outcome.output) } : errorResult(outcome.error)
      }
      case "call": {
        if (typeof args.operation !== "string") return invalidArguments("missing required field: operation")
        const outcome = await backend.call(args.operation, args.input ?? null, signal, meta)
        return outcome.ok ? { content: text(outcome.output) } : errorResult(outcome.error)
      }
      case "batch": {
        const calls = args.calls
        if (!Array.isArray(calls)) return invalidArguments("missing required field: calls")
        const maxBatch = options.maxBatch ?? 64
        if (calls.length > maxBatch) return invalidArguments(`a batch has at most ${maxBatch} calls, this one ${calls.length}`)
        const results = await Promise.all(calls.map(async (c: unknown) => {
          if (!isObject(c) || typeof c.operation !== "string") {
            return { result: "error", error: { code: "INVALID_INPUT", message: "missing required field: operation", retryable: false } }
          }
          const outcome = await backend.call(c.operation, c.input ?? null, signal, meta)
          return outcome.ok ? { result: "ok", output: outcome.output } : { result: "error", error: outcome.error }
        }))
        return { content: text({ results }) }
      }
      default:
        return errorResult({ code: "NOT_FOUND", message: `tool not found: ${request.params.name.slice(0, 200)}`, retryable: false })
    }
  })
  return server
}
