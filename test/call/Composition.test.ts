/** SPEC §7: composition through `ctx.env.invoke` and the privilege model, over the in-memory wire. */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Option, Redacted, Ref, Schema, Stream } from "effect"
import type * as Connection from "../../src/call/Connection.js"
import type * as CallError from "../../src/errors/CallError.js"
import * as Operation from "../../src/services/Operation.js"
import { makePair, who } from "./harness.js"

/** What a child saw of its context. */
const Seen = Schema.Struct({
  identity: Schema.NullOr(Schema.String),
  internal: Schema.Boolean,
  metadataSize: Schema.Number,
  forwardedFor: Schema.NullOr(Schema.String),
  requestId: Schema.String,
  parentRequestId: Schema.NullOr(Schema.String),
  deadline: Schema.NullOr(Schema.Number),
  capabilities: Schema.Array(Schema.String),
  abortPolicy: Schema.String
})
type Seen = typeof Seen.Type

const describeContext = (ctx: Operation.OperationContext): Seen => ({
  identity: Option.getOrNull(Option.map(ctx.identity, (i) => i.id)),
  internal: ctx.internal,
  metadataSize: ctx.metadata.size,
  forwardedFor: Option.getOrNull(Option.map(ctx.forwardedFor, (i) => i.id)),
  requestId: ctx.requestId,
  parentRequestId: Option.getOrNull(ctx.parentRequestId),
  deadline: Option.getOrNull(ctx.deadline),
  capabilities: [...ctx.capabilities.keys()].sort(),
  abortPolicy: ctx.abortPolicy
})

/** Needs scope `x`; Internal: reachable only through composition. */
const needsX = Operation.query({
  name: "core/needsX",
  visibility: "internal",
  input: Schema.Unknown,
  output: Seen,
  access: { requiredScopes: ["x"] },
  handler: (_, ctx) => Effect.succeed(describeContext(ctx))
})
const needsXExternal = Operation.query({
  name: "core/needsXExternal",
  input: Schema.Unknown,
  output: Seen,
  access: { requiredScopes: ["x"] },
  handler: (_, ctx) => Effect.succeed(describeContext(ctx))
})
const ticker = Operation.subscription({
  name: "core/ticker",
  input: Schema.Unknown,
  output: Schema.Number,
  handler: () => Stream.make(1, 2, 3)
})

const Composed = Schema.Struct({ parent: Seen, child: Seen })

/** A composing handler: sets metadata, then invokes `target`. */
const composer = (name: string, target: string, options: Operation.RegistrationOptions) =>
  Operation.query({
    name,
    input: Schema.Unknown,
    output: Composed,
    handler: (_, ctx) => {
      ctx.metadata.set("secret-from-parent", "v")
      return Effect.map(ctx.env.invoke(target, null), (child) => ({
        parent: describeContext(ctx),
        child: child as Seen
      }))
    }
  }).with(options)

const key = Redacted.make("sk-live-123")
const ops = [
  needsX,
  needsXExternal,
  ticker,
  composer("gw/withX", "core/needsX", {
    authority: Operation.authority("gateway", { scopes: ["x"] }),
    env: ["core/needsX"],
    capabilities: { apiKey: key }
  }),
  composer("gw/withoutAuthority", "core/needsX", { env: ["core/needsX"] }),
  composer("gw/wrongAuthority", "core/needsX", {
    authority: Operation.authority("weak", { scopes: ["y"] }),
    env: ["core/needsX"]
  }),
  composer("gw/outsideEnv", "core/needsXExternal", {
    authority: Operation.authority("gateway", { scopes: ["x"] }),
    env: ["core/needsX"]
  }),
  composer("gw/noEnv", "core/needsX", { authority: Operation.authority("gateway", { scopes: ["x"] }) }),
  composer("gw/subscription", "core/ticker", {
    authority: Operation.authority("gateway", { scopes: ["x"] }),
    env: ["core/ticker"]
  })
]

const failure = (e: CallError.CallError) => [e.code, e.message]

describe("composition and privilege (SPEC §7)", () => {
  it.scoped("a caller without scope x reaches an op needing x only through a handler whose authority has x", () =>
    Effect.gen(function*() {
      const { client, expectIdle } = yield* makePair(ops, { server: { identity: who("caller", ["basic"]) } })
      // directly: forbidden (External) or not found (Internal)
      expect(failure(yield* Effect.flip(client.call("core/needsXExternal", null)))).toEqual([
        "FORBIDDEN",
        "missing required scope: x"
      ])
      expect(failure(yield* Effect.flip(client.call("core/needsX", null)))).toEqual([
        "NOT_FOUND",
        "operation not found: core/needsX"
      ])
      // through the gateway: the child's check runs against the gateway's authority, not the caller's
      const { child, parent } = Schema.decodeUnknownSync(Composed)(yield* client.call("gw/withX", null))
      expect(parent.identity).toBe("caller")
      expect(child.identity).toBe("gateway")
      // no authority → the child runs with no identity; the wrong authority is not enough either
      expect(failure(yield* Effect.flip(client.call("gw/withoutAuthority", null)))).toEqual([
        "FORBIDDEN",
        "authentication required"
      ])
      expect(failure(yield* Effect.flip(client.call("gw/wrongAuthority", null)))).toEqual([
        "FORBIDDEN",
        "missing required scope: x"
      ])
      yield* expectIdle
    }))

  it.scoped("a caller who has x does not lend it to a handler without authority (the check is never skipped)", () =>
    Effect.gen(function*() {
      const { client, expectIdle } = yield* makePair(ops, { server: { identity: who("root", ["x"]) } })
      expect(yield* client.call("core/needsXExternal", null)).toMatchObject({ identity: "root" })
      expect(failure(yield* Effect.flip(client.call("gw/withoutAuthority", null)))).toEqual([
        "FORBIDDEN",
        "authentication required"
      ])
      yield* expectIdle
    }))

  it.scoped("the child gets a fresh id, internal = true, fresh metadata, no forwarded_for, inherited capabilities and deadline", () =>
    Effect.gen(function*() {
      const { client, expectIdle } = yield* makePair(ops, { server: { identity: who("caller", []) } })
      const result = yield* client.call("gw/withX", null, {
        forwardedFor: { id: "alice", scopes: ["x"], resources: {} }
      })
      const { child, parent } = Schema.decodeUnknownSync(Composed)(result)
      expect(parent.internal).toBe(false)
      expect(parent.forwardedFor).toBe("alice")
      expect(parent.metadataSize).toBe(1)
      expect(child.internal).toBe(true)
      expect(child.metadataSize).toBe(0) // metadata set by the parent is not visible to the child
      expect(child.forwardedFor).toBeNull() // never forwarded to a child...
      expect(child.identity).toBe("gateway") // ...and alice's scope x granted nothing: the authority did
      expect(child.requestId).not.toBe(parent.requestId)
      expect(child.parentRequestId).toBe(parent.requestId)
      expect(parent.parentRequestId).toBeNull()
      expect(child.deadline).toBe(parent.deadline) // the parent's deadline, not a fresh one
      expect(parent.deadline).not.toBeNull()
      expect(parent.capabilities).toEqual(["apiKey"])
      expect(child.capabilities).toEqual(["apiKey"])
      yield* expectIdle
    }))

  it.scoped("forwarded_for never grants anything, even when it names an identity with the scope", () =>
    Effect.gen(function*() {
      const { client, expectIdle } = yield* makePair(ops, { server: { identity: who("caller", []) } })
      const error = yield* Effect.flip(
        client.call("core/needsXExternal", null, { forwardedFor: { id: "admin", scopes: ["x"], resources: {} } })
      )
      expect(failure(error)).toEqual(["FORBIDDEN", "missing required scope: x"])
      yield* expectIdle
    }))

  it.scoped("a handler cannot set `internal` (or any context field): the context is frozen and options cannot carry it", () =>
    Effect.gen(function*() {
      const attempts = yield* Ref.make<Array<string>>([])
      const sneaky = Operation.query({
        name: "gw/sneaky",
        input: Schema.Unknown,
        output: Seen,
        handler: (_, ctx) =>
          Effect.gen(function*() {
            try {
              ;(ctx as { internal: boolean }).internal = true
            } catch (e) {
              yield* Ref.update(attempts, (a) => [...a, (e as Error).constructor.name])
            }
            const options = { internal: false, identity: Option.some({ id: "root", scopes: ["x"], resources: {} }) }
            return (yield* ctx.env.invoke("core/needsX", null, options as Operation.InvokeOptions)) as Seen
          })
      }).with({ authority: Operation.authority("gateway", { scopes: ["x"] }), env: ["core/needsX"] })
      const { client, expectIdle } = yield* makePair([...ops, sneaky])
      const child = yield* client.call("gw/sneaky", null)
      expect(child).toMatchObject({ internal: true, identity: "gateway" })
      expect(yield* Ref.get(attempts)).toEqual(["TypeError"])
      yield* expectIdle
    }))

  it.scoped("the scoped env bounds reachability: outside it → NOT_FOUND, even for an existing operation", () =>
    Effect.gen(function*() {
      const { client, expectIdle } = yield* makePair(ops)
      expect(failure(yield* Effect.flip(client.call("gw/outsideEnv", null)))).toEqual([
        "NOT_FOUND",
        "operation not found: core/needsXExternal"
      ])
      expect(failure(yield* Effect.flip(client.call("gw/noEnv", null)))).toEqual([
        "NOT_FOUND",
        "operation not found: core/needsX"
      ])
      yield* expectIdle
    }))

  it.scoped("env.invoke on a subscription → INVALID_OPERATION_TYPE", () =>
    Effect.gen(function*() {
      const { client, expectIdle } = yield* makePair(ops)
      expect((yield* Effect.flip(client.call("gw/subscription", null))).code).toBe("INVALID_OPERATION_TYPE")
      yield* expectIdle
    }))

  it.scoped("capabilities never reach a handler whose check failed, and are redacted when printed", () =>
    Effect.gen(function*() {
      const ran = yield* Ref.make(false)
      const guardedWithCapability = Operation.query({
        name: "core/guardedCap",
        input: Schema.Unknown,
        output: Schema.Null,
        access: { requiredScopes: ["x"] },
        handler: () => Effect.as(Ref.set(ran, true), null)
      }).with({ capabilities: { token: Redacted.make("very-secret") } })
      const { client, expectIdle } = yield* makePair([guardedWithCapability])
      expect((yield* Effect.flip(client.call("core/guardedCap", null))).code).toBe("FORBIDDEN")
      expect(yield* Ref.get(ran)).toBe(false)
      expect(String(key)).not.toContain("sk-live")
      expect(JSON.stringify({ key })).not.toContain("sk-live")
      yield* expectIdle
    }))

  it.scoped("typed composition with Operation.invoke encodes the input and decodes the output", () =>
    Effect.gen(function*() {
      const add = Operation.query({
        name: "math/add",
        visibility: "internal",
        input: Schema.Struct({ a: Schema.NumberFromString, b: Schema.NumberFromString }),
        output: Schema.Struct({ sum: Schema.NumberFromString }),
        handler: ({ a, b }) => Effect.succeed({ sum: a + b })
      })
      const twice = Operation.query({
        name: "math/twice",
        input: Schema.Struct({ n: Schema.Number }),
        output: Schema.Number,
        handler: ({ n }, ctx) => Effect.map(Operation.invoke(ctx, add, { a: n, b: n }), ({ sum }) => sum)
      }).with({ env: ["math/add"] })
      const { client, expectIdle } = yield* makePair([add, twice])
      expect(yield* client.call("math/twice", { n: 21 })).toBe(42)
      yield* expectIdle
    }))
})

describe("overlay seams (for the peer graph and session overlays)", () => {
  it.scoped("extendEnv adds to every context's env, roots and children alike", () =>
    Effect.gen(function*() {
      const shout = Operation.query({
        name: "ov/shout",
        visibility: "internal",
        input: Schema.Unknown,
        output: Schema.String,
        handler: (_, ctx) => Effect.succeed((ctx.env as { tag?: string }).tag ?? "no tag")
      })
      const top = Operation.query({
        name: "ov/top",
        input: Schema.Unknown,
        output: Schema.Array(Schema.String),
        handler: (_, ctx) =>
          Effect.map(ctx.env.invoke("ov/shout", null), (child) => [(ctx.env as { tag?: string }).tag ?? "", child as string])
      }).with({ env: ["ov/shout"] })
      const { client, expectIdle } = yield* makePair([shout, top], {
        server: { extendEnv: (ctx, env) => ({ ...env, tag: `env of ${ctx.operation}` }) }
      })
      expect(yield* client.call("ov/top", null)).toEqual(["env of ov/top", "env of ov/shout"])
      yield* expectIdle
    }))

  it.scoped("invokeRegistration runs an overlay's registration with the same privilege rules, its env resolving through the overlay", () =>
    Effect.gen(function*() {
      const leafSeen = yield* Ref.make<Seen | undefined>(undefined)
      // a "session" operation that exists only in the overlay, and composes a name only the overlay knows
      const sessionLeaf = Operation.query({
        name: "session/leaf",
        input: Schema.Unknown,
        output: Schema.Null,
        access: { requiredScopes: ["session"] },
        handler: (_, ctx) => Effect.as(Ref.set(leafSeen, describeContext(ctx)), null)
      }).with({ provenance: "Session" })
      const sessionOp = Operation.query({
        name: "session/op",
        input: Schema.Unknown,
        output: Schema.Null,
        handler: (_, ctx) => Effect.as(ctx.env.invoke("session/leaf", null), null)
      }).with({
        provenance: "Session",
        authority: Operation.authority("session-authority", { scopes: ["session"] }),
        env: ["session/leaf"]
      })
      const overlay = {
        lookup: (name: string) => name === "session/op" ? sessionOp : name === "session/leaf" ? sessionLeaf : undefined,
        list: () => [sessionOp, sessionLeaf]
      }
      const opener = Operation.query({
        name: "ov/opener",
        input: Schema.Unknown,
        output: Schema.Null,
        handler: (_, ctx) =>
          Effect.flatMap(Deferred.await(serverSide), (server) =>
            Effect.as(server.dispatcher.invokeRegistration(ctx, sessionOp, null, undefined, overlay), null))
      })
      const serverSide = yield* Deferred.make<Connection.Connection>()
      const { client, expectIdle, server } = yield* makePair([opener])
      yield* Deferred.succeed(serverSide, server)
      yield* client.call("ov/opener", null)
      expect(yield* Ref.get(leafSeen)).toMatchObject({ identity: "session-authority", internal: true })
      // the overlay's operations are not reachable from the wire
      expect((yield* Effect.flip(client.call("session/op", null))).code).toBe("NOT_FOUND")
      yield* expectIdle
    }))
})
