/**
 * The composition env on its own (no network): routing order, pinned names, what the wire sees, disconnected peers,
 * the scoped env as the bound of reachability. Peer overlays here are plain registrations added in a scope, as an
 * adapter would add them.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Option, Schema, Scope } from "effect"
import * as Composite from "../../src/peer/Composite.js"
import * as Identity from "../../src/schema/Identity.js"
import { ADMIN_SCOPE } from "../../src/schema/Identity.js"
import * as Operation from "../../src/services/Operation.js"
import * as OperationRegistry from "../../src/services/OperationRegistry.js"
import * as PeerCompositeEnv from "../../src/services/PeerCompositeEnv.js"

/** An imported leaf that answers who served it. */
const local = (name: string, by: string) =>
  Operation.query({ name, input: Schema.Unknown, output: Schema.String, handler: () => Effect.succeed(by) })
const leaf = (name: string, by: string) => local(name, by).with({ provenance: "FromCall" })

/** A local operation that calls `target` through `ctx.env.invoke` (or invokePeer when `peer` is given). */
const caller = (name: string, env: Operation.ScopedEnv) =>
  Operation.query({
    name,
    input: Schema.Struct({ target: Schema.String, peer: Schema.optional(Schema.String) }),
    output: Schema.Unknown,
    authority: Operation.authority("composer"),
    env,
    handler: ({ peer, target }, ctx) =>
      peer === undefined
        ? ctx.env.invoke(target, {})
        : PeerCompositeEnv.invokePeer(ctx, peer === "*" ? PeerCompositeEnv.Any : PeerCompositeEnv.Specific(peer), target, {})
  })

const setup = Effect.gen(function*() {
  const registry = yield* OperationRegistry.make([
    local("node/info", "local"),
    caller("app/call", PeerCompositeEnv.scopedPeerEnv(["node/info", "svc/op", "svc/only-a"], [{ peer: "b", name: "svc/pinned" }]))
  ])
  const graph = yield* Composite.make(registry.source, { listPeers: true })
  const call = (target: string, peer?: string) =>
    graph.call("app/call", peer === undefined ? { target } : { target, peer })
  return { graph, call }
})

describe("PeerCompositeEnv", () => {
  it.scoped("routes peers in insertion order before the local base; the wire sees local operations first", () =>
    Effect.gen(function*() {
      const { call, graph } = yield* setup
      yield* graph.add("a", [leaf("svc/op", "a"), leaf("node/info", "a"), leaf("svc/only-a", "a")])
      yield* graph.add("b", [leaf("svc/op", "b"), leaf("svc/pinned", "b")])
      expect(yield* call("svc/op")).toBe("a")
      expect(yield* call("svc/op", "b")).toBe("b")
      expect(yield* call("svc/op", "*")).toBe("a")
      // composition: a peer serving node/info comes first (SPEC §9 order) …
      expect(yield* call("node/info")).toBe("a")
      // … but the wire (the served source) always gets the node's own operation
      expect(graph.source.lookup("node/info")?.provenance).toBe("Local")
      expect(graph.source.lookup("svc/op")).toBeUndefined()
      // a pinned entry reaches that operation on that peer only
      expect(yield* call("svc/pinned", "b")).toBe("b")
      expect(yield* call("b/svc/pinned")).toBe("b")
      expect((yield* Effect.flip(call("svc/pinned"))).message).toBe("operation not found: svc/pinned")
      expect((yield* Effect.flip(call("svc/only-a", "b"))).message).toBe("operation not found: b/svc/only-a")
      // outside the scoped env nothing is reachable, even what a peer serves
      expect((yield* Effect.flip(call("svc/secret"))).code).toBe("NOT_FOUND")
    }))

  it.scoped("a peer whose scope closed answers 'not connected' at once; forget makes it unknown", () =>
    Effect.gen(function*() {
      const { call, graph } = yield* setup
      const scope = yield* Scope.make()
      yield* Scope.extend(graph.add("a", [leaf("svc/op", "a")]), scope)
      expect(graph.peers()).toEqual([
        { id: "a", connected: true, operations: [{ name: "svc/op", namespace: "svc", op_type: "query" }] }
      ])
      yield* Scope.close(scope, Exit.void)
      const away = yield* Effect.flip(call("svc/op", "a"))
      expect([away.code, away.message]).toEqual(["INTERNAL", "peer a is not connected"])
      expect((yield* Effect.flip(call("svc/op"))).message).toBe("peer a is not connected")
      yield* graph.add("b", [leaf("svc/op", "b")])
      expect(yield* call("svc/op", "*")).toBe("b")
      yield* graph.forget("a")
      expect((yield* Effect.flip(call("svc/op", "a"))).code).toBe("NOT_FOUND")
      expect(graph.peers().map((p) => p.id)).toEqual(["b"])
    }))

  it.scoped("a new import in the same slot replaces the old one; the old one's scope closing later leaves it", () =>
    Effect.gen(function*() {
      const { call, graph } = yield* setup
      const old = yield* Scope.make()
      yield* Scope.extend(graph.add("a", [leaf("svc/op", "old")], { slot: "call" }), old)
      yield* graph.add("a", [leaf("svc/op", "new")], { slot: "call" })
      yield* Scope.close(old, Exit.void)
      expect(yield* call("svc/op", "a")).toBe("new")
    }))

  it.scoped("services/list-peers: an admin sees every operation of every peer, with their op types", () =>
    Effect.gen(function*() {
      const { graph } = yield* setup
      yield* graph.add("a", [
        Operation.subscription({ name: "svc/tail", input: Schema.Unknown, output: Schema.Unknown, handler: () => Effect.never as never })
          .with({ provenance: "FromCall" })
      ])
      const listed = yield* graph.call("services/list-peers", {}, { identity: Identity.make("ops", { scopes: [ADMIN_SCOPE] }) })
      expect(listed).toEqual({
        peers: [
          {
            peer_id: "local",
            operations: [
              { name: "services/list", namespace: "services", op_type: "query" },
              { name: "services/schema", namespace: "services", op_type: "query" },
              { name: "node/info", namespace: "node", op_type: "query" },
              { name: "app/call", namespace: "app", op_type: "query" },
              { name: "services/list-peers", namespace: "services", op_type: "query" }
            ]
          },
          { peer_id: "a", operations: [{ name: "svc/tail", namespace: "svc", op_type: "subscription" }] }
        ]
      })
      expect(Option.isSome(Option.fromNullable(graph.source.lookup("services/list-peers")))).toBe(true)
    }))

  it.scoped("services/list-peers: anyone else sees only what it could call, like services/list", () =>
    Effect.gen(function*() {
      const { graph } = yield* setup
      const guarded = (name: string) =>
        Operation.query({ name, input: Schema.Unknown, output: Schema.String, access: { requiredScopes: ["ops"] }, handler: () => Effect.succeed(name) })
      const exported = { provenance: "FromCall", visibility: "external" } as const
      yield* graph.add("a", [
        local("svc/open", "a").with(exported),
        guarded("svc/guarded").with(exported),
        leaf("svc/internal", "a") // an Internal import: no caller can reach it from the wire
      ])
      yield* graph.add("b", [leaf("svc/hidden", "b"), guarded("svc/guarded-b").with(exported)])
      type Listing = { peers: Array<{ peer_id: string; operations: Array<{ name: string }> }> }
      const names = (listing: unknown) =>
        (listing as Listing).peers.map((p) => [p.peer_id, p.operations.map((o) => o.name)] as const)

      // Anonymous: the open export only; b offers it nothing and is left out (its id is not disclosed).
      expect(names(yield* graph.call("services/list-peers", {}))).toEqual([
        ["local", ["services/list", "services/schema", "node/info", "app/call", "services/list-peers"]],
        ["a", ["svc/open"]]
      ])
      // With the scope the guarded exports need: those too, never the Internal imports.
      expect(names(yield* graph.call("services/list-peers", {}, { identity: Identity.make("w", { scopes: ["ops"] }) })))
        .toEqual([
          ["local", ["services/list", "services/schema", "node/info", "app/call", "services/list-peers"]],
          ["a", ["svc/open", "svc/guarded"]],
          ["b", ["svc/guarded-b"]]
        ])
      // An admin sees the graph, Internal imports included.
      expect(names(yield* graph.call("services/list-peers", {}, { identity: Identity.make("root", { scopes: [ADMIN_SCOPE] }) })))
        .toEqual([
          ["local", ["services/list", "services/schema", "node/info", "app/call", "services/list-peers"]],
          ["a", ["svc/open", "svc/guarded", "svc/internal"]],
          ["b", ["svc/hidden", "svc/guarded-b"]]
        ])
    }))
})
