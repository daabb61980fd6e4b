/**
 * from_mcp against a real MCP server (the official SDK's `Server` over Streamable HTTP on 127.0.0.1, stateful
 * sessions, bearer-protected): a wrong token is `Unauthorized` at initialize; the tools are imported as
 * `math/*` mutations, re-exported with an access control, and a caller calls them through a node over QUIC — output
 * from `structuredContent`, `isError` as `MCP_TOOL_ERROR`, the ACL enforced (no confused deputy), and a call that
 * times out cancels the tool on the MCP server.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Redacted } from "effect"
import * as Node from "../../src/layers/Node.js"
import * as CallClient from "../../src/layers/Client.js"
import * as FromMcp from "../../src/peer/FromMcp.js"
import * as IdentityStore from "../../src/services/IdentityStore.js"
import { mcpServer, TOKEN } from "../shared/mcp.js"

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
