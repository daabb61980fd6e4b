/**
 * to_mcp through the gateway's `/mcp` (Streamable HTTP) on 127.0.0.1, driven by the official MCP SDK's `Client`: it
 * lists and calls tools, sees a domain error and a forbidden call as `isError` results with the CallError JSON, sees
 * more tools with a bearer token, uses the generic four-tool shape; a client that cancels or drops its connection
 * interrupts the handler; a session belongs to the caller that opened it.
 */
import { describe, expect, it } from "@effect/vitest"
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import { Deferred, Effect, Option, Redacted, Schema, TestClock } from "effect"
import type { Scope } from "effect"
import * as Http from "node:http"
import * as Discovery from "../../src/call/Discovery.js"
import * as CallError from "../../src/errors/CallError.js"
import * as Gateway from "../../src/layers/http/Gateway.js"
import type { Identity } from "../../src/schema/Identity.js"
import * as Operation from "../../src/services/Operation.js"
import * as OperationRegistry from "../../src/services/OperationRegistry.js"
import { listen } from "../shared/http.js"

interface Signals {
  readonly started: Deferred.Deferred<void>
  readonly interrupted: Deferred.Deferred<void>
}

const operations = (signals: Signals) => [
  Operation.query({
    name: "demo/echo",
    description: "Echoes its text",
    input: Schema.Struct({ text: Schema.String, extra: Schema.optional(Schema.Unknown) }),
    output: Schema.Struct({ text: Schema.String, seen: Schema.Unknown }),
    handler: ({ extra, text }) => Effect.succeed({ text, seen: extra ?? null })
  }),
  Operation.query({
    name: "demo/count",
    input: Schema.Number,
    output: Schema.Number,
    handler: (n) => Effect.succeed(n + 1)
  }),
  Operation.mutation({
    name: "demo/conflict",
    input: Schema.Unknown,
    output: Schema.Unknown,
    errors: [Operation.error({ code: "CONFLICT", description: "already there", schema: Schema.Struct({ id: Schema.String }), httpStatus: 409 })],
    handler: () => Effect.fail(CallError.domain("CONFLICT", "already there", { id: "x1" }))
  }),
  Operation.query({
    name: "demo/secret",
    input: Schema.Unknown,
    output: Schema.String,
    access: { requiredScopes: ["secret"] },
    handler: () => Effect.succeed("the secret")
  }),
  Operation.query({
    name: "demo/slow",
    input: Schema.Unknown,
    output: Schema.Unknown,
    handler: () =>
      Effect.zipRight(Deferred.succeed(signals.started, undefined), Effect.never).pipe(
        Effect.onInterrupt(() => Deferred.succeed(signals.interrupted, undefined))
      )
  })
]

const identities: Record<string, Identity> = { alk_secret_token: { id: "alk_secr", scopes: ["secret"], resources: {} } }

const serve = (mcp: NonNullable<Gateway.Options["mcp"]>): Effect.Effect<{ url: string; signals: Signals }, never, Scope.Scope> =>
  Effect.gen(function*() {
    const signals: Signals = { started: yield* Deferred.make<void>(), interrupted: yield* Deferred.make<void>() }
    const gateway = yield* Gateway.make({
      source: Discovery.withDiscovery(OperationRegistry.sourceOf(operations(signals))),
      authenticator: {
        resolveFingerprint: () => Effect.succeed(Option.none()),
        resolveToken: (token) => Effect.sync(() => Option.fromNullable(identities[Redacted.value(token)]))
      },
      mcp
    })
    const server = Http.createServer(gateway.handler)
    const base = yield* listen(server)
    return { url: `${base}/mcp`, signals }
  })

/** A connected SDK client, closed with the scope. */
const connect = (url: string, token?: string) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const client = new Client({ name: "alknet-test", version: "1.0.0" })
      const transport = new StreamableHTTPClientTransport(new URL(url), {
        requestInit: token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } }
      })
      await client.connect(transport)
      return client
    }),
    (client) => Effect.promise(() => client.close())
  )

const textOf = (result: unknown) => JSON.parse((result as { content: Array<{ text: string }> }).content[0]!.text)

describe("to_mcp", () => {
  it.scoped("the SDK client lists and calls one tool per operation; errors and forbidden calls are isError results", () =>
    Effect.gen(function*() {
      const { url } = yield* serve(true)
      const client = yield* connect(url)
      const { tools } = yield* Effect.promise(() => client.listTools())
      const names = tools.map((t) => t.name)
      expect(names).toEqual(expect.arrayContaining(["demo.echo", "demo.count", "demo.conflict", "services.list", "services.schema"]))
      // What the caller may not call is not listed.
      expect(names).not.toContain("demo.secret")
      const echo = tools.find((t) => t.name === "demo.echo")!
      expect(echo).toMatchObject({ title: "demo/echo", description: "Echoes its text", annotations: { readOnlyHint: true } })
      expect(echo.inputSchema).toMatchObject({ type: "object", required: ["text"], properties: { text: { type: "string" } } })
      expect(JSON.stringify(tools)).not.toContain("$id")

      const called = yield* Effect.promise(() => client.callTool({ name: "demo.echo", arguments: { text: "hi", extra: [1] } }))
      expect(called.isError).toBeFalsy()
      expect(called.structuredContent).toEqual({ text: "hi", seen: [1] })
      // A non-object input is wrapped as {input}.
      expect(tools.find((t) => t.name === "demo.count")!.inputSchema).toMatchObject({ type: "object", required: ["input"] })
      expect(textOf(yield* Effect.promise(() => client.callTool({ name: "demo.count", arguments: { input: 41 } })))).toBe(42)

      const conflict = yield* Effect.promise(() => client.callTool({ name: "demo.conflict", arguments: {} }))
      expect(conflict.isError).toBe(true)
      expect(textOf(conflict)).toEqual({ code: "CONFLICT", message: "already there", retryable: false, details: { id: "x1" } })
      const invalid = yield* Effect.promise(() => client.callTool({ name: "demo.echo", arguments: { text: 5 } }))
      expect(invalid.isError).toBe(true)
      expect(textOf(invalid)).toMatchObject({ code: "INVALID_INPUT", message: "invalid input at text: Expected string, actual 5" })

      // Unauthorized: the anonymous caller calls a tool it was not shown; the dispatch refuses it, as POST /call would.
      const forbidden = yield* Effect.promise(() => client.callTool({ name: "demo.secret", arguments: { input: null } }))
      expect(forbidden.isError).toBe(true)
      expect(textOf(forbidden)).toEqual({ code: "FORBIDDEN", message: "authentication required", retryable: false })
      const missing = yield* Effect.promise(() => client.callTool({ name: "demo.nope", arguments: {} }))
      expect(textOf(missing)).toMatchObject({ code: "NOT_FOUND", message: "tool not found: demo.nope" })
    }))

  it.scoped("a bearer token is the caller: the tools it may call, and they answer", () =>
    Effect.gen(function*() {
      const { url } = yield* serve(true)
      const withToken = yield* connect(url, "alk_secret_token")
      const { tools } = yield* Effect.promise(() => withToken.listTools())
      expect(tools.map((t) => t.name)).toContain("demo.secret")
      expect(textOf(yield* Effect.promise(() => withToken.callTool({ name: "demo.secret", arguments: {} })))).toBe("the secret")
      // An unknown token is anonymous.
      const wrong = yield* connect(url, "alk_wrong")
      expect((yield* Effect.promise(() => wrong.listTools())).tools.map((t) => t.name)).not.toContain("demo.secret")
    }))

  it.scoped("generic mode: search, schema, call and batch; the ACL still decides", () =>
    Effect.gen(function*() {
      const { url } = yield* serve({ mode: "generic" })
      const client = yield* connect(url)
      const { tools } = yield* Effect.promise(() => client.listTools())
      expect(tools.map((t) => t.name)).toEqual(["search", "schema", "call", "batch"])
      const found = textOf(yield* Effect.promise(() => client.callTool({ name: "search", arguments: { query: "echo" } })))
      expect(found).toEqual({ operations: [{ name: "demo/echo", description: "Echoes its text", type: "query" }] })
      const schema = textOf(yield* Effect.promise(() => client.callTool({ name: "schema", arguments: { name: "demo/count" } })))
      expect(schema).toMatchObject({ name: "demo/count", op_type: "query" })
      expect(textOf(yield* Effect.promise(() => client.callTool({ name: "call", arguments: { operation: "demo/count", input: 1 } })))).toBe(2)
      const denied = yield* Effect.promise(() => client.callTool({ name: "call", arguments: { operation: "demo/secret" } }))
      expect(denied.isError).toBe(true)
      expect(textOf(denied)).toEqual({ code: "FORBIDDEN", message: "authentication required", retryable: false })
      const batch = textOf(yield* Effect.promise(() =>
        client.callTool({ name: "batch", arguments: { calls: [{ operation: "demo/count", input: 5 }, { operation: "demo/nope" }] } })
      ))
      expect(batch.results).toEqual([
        { result: "ok", output: 6 },
        { result: "error", error: { code: "NOT_FOUND", message: "operation not found: demo/nope", retryable: false } }
      ])
    }))

  it.scoped("a client that cancels a tool call (notifications/cancelled) interrupts the handler", () =>
    Effect.gen(function*() {
      const { signals, url } = yield* serve(true)
      const client = yield* connect(url)
      const controller = new AbortController()
      const pending = client.callTool({ name: "demo.slow", arguments: {} }, undefined, { signal: controller.signal }).then(
        () => "answered",
        () => "cancelled"
      )
      yield* Deferred.await(signals.started)
      controller.abort()
      expect(yield* Effect.promise(() => pending)).toBe("cancelled")
      yield* Deferred.await(signals.interrupted)
    }))

  it.scoped("a client that drops the connection during a tool call interrupts the handler", () =>
    Effect.gen(function*() {
      const { signals, url } = yield* serve(true)
      const client = yield* connect(url)
      const transport = client.transport as StreamableHTTPClientTransport
      const req = Http.request(url, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
          "mcp-session-id": transport.sessionId!
        }
      })
      req.on("error", () => undefined)
      req.end(JSON.stringify({ jsonrpc: "2.0", id: 99, method: "tools/call", params: { name: "demo.slow", arguments: {} } }))
      yield* Deferred.await(signals.started)
      req.destroy()
      yield* Deferred.await(signals.interrupted)
    }))

  it.scoped("a session belongs to the caller that opened it", () =>
    Effect.gen(function*() {
      const { url } = yield* serve(true)
      const owner = yield* connect(url, "alk_secret_token")
      const sessionId = (owner.transport as StreamableHTTPClientTransport).sessionId!
      const post = (headers: Record<string, string>) =>
        Effect.promise(() =>
          fetch(url, {
            method: "POST",
            headers: { "content-type": "application/json", accept: "application/json, text/event-stream", "mcp-session-id": sessionId, ...headers },
            body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" })
          }).then((r) => r.status)
        )
      // Without the owner's token the session does not exist for you.
      expect(yield* post({})).toBe(404)
      expect(yield* post({ authorization: "Bearer alk_secret_token" })).toBe(200)
      // A request without a session must be an initialize.
      const noSession = yield* Effect.promise(() => fetch(url))
      expect(noSession.status).toBe(400)
    }))

  it.scoped("sessions are bounded in number, and idle ones expire", () =>
    Effect.gen(function*() {
      const { url } = yield* serve({ maxSessions: 1, idleTimeout: "10 minutes" })
      const first = yield* connect(url)
      // A second session while the first is in use: refused.
      const refused = yield* Effect.promise(() => new Client({ name: "t", version: "1" }).connect(new StreamableHTTPClientTransport(new URL(url))).then(() => "connected", (e: Error) => e.message))
      expect(refused).toContain("too many MCP sessions (limit 1)")
      // After 10 idle minutes the first one expires (swept when the next session opens).
      yield* TestClock.adjust("11 minutes")
      const second = yield* connect(url)
      expect((yield* Effect.promise(() => second.listTools())).tools.length).toBeGreaterThan(0)
      const expired = yield* Effect.promise(() => first.listTools().then(() => "answered", (e: Error) => e.message))
      expect(expired).toContain("session not found")
    }))

  it.scoped("a malformed body is 400", () =>
    Effect.gen(function*() {
      const { url } = yield* serve(true)
      const bad = yield* Effect.promise(() => fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: "{nope" }))
      expect(bad.status).toBe(400)
      expect(yield* Effect.promise(() => bad.json())).toMatchObject({ code: "BAD_REQUEST" })
    }))
})
