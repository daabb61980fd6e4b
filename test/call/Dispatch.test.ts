/** SPEC §5 over the wire: every dispatch step and the exact messages of §4, seen by a raw peer and by a connection. */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Logger, Option, Redacted, Ref, Schema, Stream, TestClock } from "effect"
import * as FrameCodec from "../../src/call/Codec.js"
import * as CallError from "../../src/errors/CallError.js"
import * as Operation from "../../src/services/Operation.js"
import { makePair, openRaw, raw, rawCall, request, who } from "./harness.js"

const Who = Schema.Struct({
  identity: Schema.NullOr(Schema.String),
  scopes: Schema.Array(Schema.String),
  forwardedFor: Schema.NullOr(Schema.String),
  internal: Schema.Boolean
})
const whoami = Operation.query({
  name: "test/whoami",
  input: Schema.Unknown,
  output: Who,
  handler: (_, ctx) =>
    Effect.succeed({
      identity: Option.getOrNull(Option.map(ctx.identity, (i) => i.id)),
      scopes: Option.match(ctx.identity, { onNone: () => [], onSome: (i) => i.scopes }),
      forwardedFor: Option.getOrNull(Option.map(ctx.forwardedFor, (i) => i.id)),
      internal: ctx.internal
    })
})
const nullInput = Operation.query({
  name: "test/null",
  input: Schema.Null,
  output: Schema.String,
  handler: () => Effect.succeed("got null")
})
const guarded = (name: string, access: Operation.AccessControlInput) =>
  Operation.query({ name, input: Schema.Unknown, output: Schema.String, access, handler: () => Effect.succeed("ok") })
const internalOp = Operation.query({
  name: "test/hidden",
  visibility: "internal",
  input: Schema.Unknown,
  output: Schema.String,
  handler: () => Effect.succeed("should not run")
})
const typed = Operation.mutation({
  name: "test/typed",
  input: Schema.Struct({ user: Schema.Struct({ name: Schema.String, age: Schema.Int }) }),
  output: Schema.Struct({ ok: Schema.Boolean }),
  handler: () => Effect.succeed({ ok: true })
})
const fails = Operation.query({
  name: "test/fails",
  input: Schema.Struct({ code: Schema.String }),
  output: Schema.Null,
  errors: [
    Operation.error({
      code: "NOT_READY",
      description: "try later",
      schema: Schema.Struct({ after: Schema.NumberFromString }),
      httpStatus: 503
    })
  ],
  handler: ({ code }) => Effect.fail(CallError.domain(code, `failed with ${code}`, { after: 5 }))
})
const defect = Operation.query({
  name: "test/defect",
  input: Schema.Unknown,
  output: Schema.Null,
  handler: () => Effect.die(new Error("secret internals at /etc/shadow"))
})
const thrower = Operation.query({
  name: "test/throw",
  input: Schema.Unknown,
  output: Schema.Null,
  handler: () => {
    throw new Error("secret thrown synchronously")
  }
})
const badOutput = Operation.query({
  name: "test/badOutput",
  input: Schema.Unknown,
  output: Schema.Struct({ n: Schema.Number }),
  handler: () => Effect.succeed({ n: "not a number" } as unknown as { n: number })
})
const notJson = Operation.query({
  name: "test/notJson",
  input: Schema.Unknown,
  output: Schema.Unknown,
  handler: () => Effect.succeed({ big: 10n })
})

const ops = [
  whoami,
  nullInput,
  internalOp,
  typed,
  fails,
  defect,
  thrower,
  badOutput,
  notJson,
  guarded("test/admin", { requiredScopes: ["admin", "ops"] }),
  guarded("test/any", { requiredScopesAny: ["a", "b"] }),
  guarded("test/exec", { resourceType: "container", resourceAction: "exec" }),
  guarded("test/container", { resourceType: "container" })
]

/** Defects are logged on the callee (never sent); keep test output clean. */
const quietLogger = Logger.replace(Logger.defaultLogger, Logger.none)

const errorOf = (answer: { type: string; payload: Record<string, unknown> }) => {
  expect(answer.type).toBe("call.error")
  return answer.payload
}

describe("dispatch (SPEC §5)", () => {
  it.scoped("accepts operation names with and without the leading slash; a missing input is null", () =>
    Effect.gen(function*() {
      const { client, expectIdle, transports } = yield* makePair(ops)
      expect(yield* client.call("/test/null", null)).toBe("got null")
      expect(yield* client.call("test/null", undefined)).toBe("got null")
      const answer = yield* rawCall(transports[1], { operationId: "/test/null" })
      expect(answer).toEqual({ type: "call.responded", id: "r-1", payload: { output: "got null" } })
      yield* expectIdle
    }))

  it.scoped("unknown operation → NOT_FOUND with the exact message", () =>
    Effect.gen(function*() {
      const { expectIdle, transports } = yield* makePair(ops)
      const answer = yield* rawCall(transports[1], { operationId: "/nope/op", input: {} })
      expect(errorOf(answer)).toEqual({ code: "NOT_FOUND", message: "operation not found: nope/op", retryable: false })
      yield* expectIdle
    }))

  it.scoped("an Internal operation called from the wire is NOT_FOUND with the same message", () =>
    Effect.gen(function*() {
      const { client, expectIdle } = yield* makePair(ops)
      const error = yield* Effect.flip(client.call("test/hidden", null))
      expect(error).toMatchObject({ code: "NOT_FOUND", message: "operation not found: test/hidden", retryable: false })
      yield* expectIdle
    }))

  it.scoped("a request without operationId gets INVALID_INPUT, and the connection keeps serving", () =>
    Effect.gen(function*() {
      const { client, expectIdle, transports } = yield* makePair(ops)
      const answer = yield* rawCall(transports[1], { input: 1 })
      expect(errorOf(answer)).toEqual({
        code: "INVALID_INPUT",
        message: "missing required field: operationId",
        retryable: false
      })
      expect(yield* client.call("test/null", null)).toBe("got null")
      yield* expectIdle
    }))

  it.scoped("access control: the exact FORBIDDEN messages", () =>
    Effect.gen(function*() {
      const anonymous = yield* makePair(ops)
      const denied = (pair: typeof anonymous, name: string) =>
        Effect.map(Effect.flip(pair.client.call(name, null)), (e) => [e.code, e.message])
      expect(yield* denied(anonymous, "test/admin")).toEqual(["FORBIDDEN", "authentication required"])
      expect(yield* anonymous.client.call("test/null", null)).toBe("got null") // open ops need no identity

      const basic = yield* makePair(ops, {
        server: { identity: who("peer-1", ["ops", "b"], { container: ["read"] }) }
      })
      expect(yield* denied(basic, "test/admin")).toEqual(["FORBIDDEN", "missing required scope: admin"])
      expect(yield* basic.client.call("test/any", null)).toBe("ok")
      expect(yield* denied(basic, "test/exec")).toEqual(["FORBIDDEN", "missing resource: container/exec"])
      expect(yield* basic.client.call("test/container", null)).toBe("ok")

      const other = yield* makePair(ops, { server: { identity: who("peer-2", ["admin"]) } })
      expect(yield* denied(other, "test/admin")).toEqual(["FORBIDDEN", "missing required scope: ops"])
      expect(yield* denied(other, "test/any")).toEqual(["FORBIDDEN", "missing required scope (any of: a, b)"])
      expect(yield* denied(other, "test/container")).toEqual(["FORBIDDEN", "missing resource: container"])

      const full = yield* makePair(ops, {
        server: { identity: who("root", ["admin", "ops", "a"], { container: ["exec"] }) }
      })
      for (const name of ["test/admin", "test/any", "test/exec", "test/container"]) {
        expect(yield* full.client.call(name, null)).toBe("ok")
      }
      for (const pair of [anonymous, basic, other, full]) yield* pair.expectIdle
    }))

  it.scoped("the step order: NOT_FOUND before FORBIDDEN before INVALID_INPUT", () =>
    Effect.gen(function*() {
      const guardedTyped = Operation.query({
        name: "test/guardedTyped",
        input: Schema.Struct({ n: Schema.Number }),
        output: Schema.Null,
        access: { requiredScopes: ["x"] },
        handler: () => Effect.succeed(null)
      })
      const { client, expectIdle } = yield* makePair([...ops, guardedTyped])
      expect((yield* Effect.flip(client.call("test/guardedTyped", "bad"))).code).toBe("FORBIDDEN")
      expect((yield* Effect.flip(client.call("test/hidden", "bad"))).code).toBe("NOT_FOUND")
      yield* expectIdle
    }))

  it.scoped("INVALID_INPUT names the failing path", () =>
    Effect.gen(function*() {
      const { client, expectIdle } = yield* makePair(ops)
      const wrongType = yield* Effect.flip(client.call("test/typed", { user: { name: "ann", age: "old" } }))
      expect(wrongType.code).toBe("INVALID_INPUT")
      expect(wrongType.message).toMatch(/^invalid input at user\.age: /)
      const missing = yield* Effect.flip(client.call("test/typed", { user: { age: 3 } }))
      expect(missing.message).toBe("missing required field: user.name")
      const notObject = yield* Effect.flip(client.call("test/typed", null))
      expect(notObject.message).toMatch(/^invalid input: Expected/)
      expect(yield* client.call("test/typed", { user: { name: "ann", age: 3 } })).toEqual({ ok: true })
      yield* expectIdle
    }))

  it.scoped("a valid auth_token replaces the connection identity for that request only; an invalid one falls back", () =>
    Effect.gen(function*() {
      const { client, expectIdle } = yield* makePair(ops, {
        server: {
          identity: who("peer-1", ["basic"]),
          resolveToken: (token) =>
            Effect.succeed(Redacted.value(token) === "alk_good" ? who("token-user", ["admin", "ops"]) : Option.none())
        }
      })
      const withToken = yield* client.call("test/whoami", null, { authToken: Redacted.make("alk_good") })
      expect(withToken).toMatchObject({ identity: "token-user", scopes: ["admin", "ops"] })
      expect(yield* client.call("test/admin", null, { authToken: Redacted.make("alk_good") })).toBe("ok")
      expect(yield* client.call("test/whoami", null)).toMatchObject({ identity: "peer-1" })
      const bad = yield* client.call("test/whoami", null, { authToken: Redacted.make("alk_bad") })
      expect(bad).toMatchObject({ identity: "peer-1", scopes: ["basic"] })
      yield* expectIdle
    }))

  it.scoped("the connection identity is evaluated per request (a changed peer entry applies to the next request)", () =>
    Effect.gen(function*() {
      const current = yield* Ref.make(who("peer-1", []))
      const { client, expectIdle } = yield* makePair(ops, { server: { identity: Ref.get(current) } })
      expect((yield* Effect.flip(client.call("test/admin", null))).message).toBe("missing required scope: admin")
      yield* Ref.set(current, who("peer-1", ["admin", "ops"]))
      expect(yield* client.call("test/admin", null)).toBe("ok")
      yield* expectIdle
    }))

  it.scoped("after max_auth_attempts failed tokens the connection is closed", () =>
    Effect.gen(function*() {
      const { client, expectIdle, server } = yield* makePair(ops, {
        server: { resolveToken: () => Effect.succeed(Option.none()), maxAuthAttempts: 3 }
      })
      const bad = { authToken: Redacted.make("alk_guess") }
      yield* client.call("test/whoami", null, bad)
      yield* client.call("test/whoami", null, bad)
      const third = yield* Effect.flip(client.call("test/whoami", null, bad))
      expect([third.code, third.message]).toEqual(["INTERNAL", "connection closed"])
      yield* server.closed
      yield* client.closed
      expect((yield* Effect.flip(client.call("test/whoami", null))).message).toBe("connection closed")
      yield* expectIdle
    }))

  it.scoped("a defect in an identity hook answers INTERNAL without details, and the connection keeps serving", () =>
    Effect.gen(function*() {
      const { client, expectIdle } = yield* makePair(ops, {
        server: { resolveToken: () => Effect.die(new Error("token store exploded: /var/secret")) }
      })
      const error = yield* Effect.flip(client.call("test/null", null, { authToken: Redacted.make("alk_x") }))
      expect(error.toPayload()).toEqual({ code: "INTERNAL", message: "internal error", retryable: false })
      expect(yield* client.call("test/null", null)).toBe("got null")
      yield* expectIdle
    }).pipe(Effect.provide(quietLogger)))

  it.scoped("forwarded_for reaches the handler, grants nothing, and a malformed one is ignored", () =>
    Effect.gen(function*() {
      const { client, expectIdle, transports } = yield* makePair(ops, { server: { identity: who("peer-1", []) } })
      const admin = { id: "alice", scopes: ["admin", "ops"], resources: {} }
      expect(yield* client.call("test/whoami", null, { forwardedFor: admin })).toMatchObject({
        identity: "peer-1",
        forwardedFor: "alice"
      })
      const denied = yield* Effect.flip(client.call("test/admin", null, { forwardedFor: admin }))
      expect(denied.message).toBe("missing required scope: admin")
      const malformed = yield* rawCall(transports[1], {
        operationId: "/test/whoami",
        forwarded_for: { id: "mallory", scopes: "admin" }
      })
      expect(malformed.payload.output).toMatchObject({ identity: "peer-1", forwardedFor: null })
      yield* expectIdle
    }))

  it.scoped("a wire request cannot set `internal`", () =>
    Effect.gen(function*() {
      const { expectIdle, transports } = yield* makePair(ops)
      const answer = yield* rawCall(transports[1], { operationId: "/test/whoami", internal: true })
      expect(answer.payload.output).toMatchObject({ internal: false })
      yield* expectIdle
    }))

  it.scoped("domain errors: a declared code passes with its details; an undeclared one becomes INTERNAL", () =>
    Effect.gen(function*() {
      const { client, expectIdle } = yield* makePair(ops)
      const declared = yield* Effect.flip(client.call("test/fails", { code: "NOT_READY" }))
      // details are encoded with the declared schema (NumberFromString: 5 → "5")
      expect(declared.toPayload()).toEqual({
        code: "NOT_READY",
        message: "failed with NOT_READY",
        retryable: false,
        details: { after: "5" }
      })
      expect(declared.protocolCode).toBe("INTERNAL")
      const undeclared = yield* Effect.flip(client.call("test/fails", { code: "OOPS" }))
      expect(undeclared.toPayload()).toEqual({
        code: "INTERNAL",
        message: "failed with OOPS",
        retryable: false,
        details: { code: "OOPS" }
      })
      yield* expectIdle
    }))

  it.scoped("defects, throws and bad outputs become INTERNAL without leaking internals", () =>
    Effect.gen(function*() {
      const { client, expectIdle, transports } = yield* makePair(ops)
      for (const name of ["test/defect", "test/throw", "test/badOutput", "test/notJson"]) {
        const answer = yield* rawCall(transports[1], { operationId: `/${name}` })
        expect(answer.payload).toEqual({ code: "INTERNAL", message: "internal error", retryable: false })
      }
      expect(yield* client.call("test/null", null)).toBe("got null")
      yield* expectIdle
    }).pipe(Effect.provide(quietLogger)))

  it.scoped("past the deadline (default 30 s) → TIMEOUT, retryable, and the handler is interrupted", () =>
    Effect.gen(function*() {
      const interrupted = yield* Ref.make(false)
      const slow = Operation.query({
        name: "test/slow",
        input: Schema.Unknown,
        output: Schema.Null,
        handler: () =>
          Effect.as(Effect.sleep("1 hour"), null).pipe(Effect.onInterrupt(() => Ref.set(interrupted, true)))
      })
      const { client, expectIdle } = yield* makePair([slow])
      const fiber = yield* Effect.fork(client.call("test/slow", null))
      yield* TestClock.adjust("29 seconds")
      expect(fiber.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 second")
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error.toPayload()).toEqual({ code: "TIMEOUT", message: "request timed out", retryable: true })
      expect(yield* Ref.get(interrupted)).toBe(true)
      yield* expectIdle
    }))

  it.scoped("a caller timeout travels as timeout_ms and bounds the callee's deadline", () =>
    Effect.gen(function*() {
      const seen = yield* Ref.make(Option.none<number>())
      const probe = Operation.query({
        name: "test/deadline",
        input: Schema.Unknown,
        output: Schema.Null,
        handler: (_, ctx) => Effect.as(Ref.set(seen, ctx.deadline), null)
      })
      const { client, expectIdle } = yield* makePair([probe])
      yield* TestClock.setTime(1_000)
      yield* client.call("test/deadline", null, { timeout: "2 seconds" })
      expect(yield* Ref.get(seen)).toEqual(Option.some(3_000))
      yield* client.call("test/deadline", null)
      expect(yield* Ref.get(seen)).toEqual(Option.some(31_000))
      yield* expectIdle
    }))

  it.scoped("unknown ids and unknown event types are ignored; the connection keeps serving", () =>
    Effect.gen(function*() {
      const { client, expectIdle, transports } = yield* makePair(ops)
      const answers = yield* raw(transports[1], [
        { type: "call.responded", id: "nobody", payload: { output: 1 } },
        { type: "call.error", id: "nobody", payload: { code: "X", message: "y", retryable: false } },
        { type: "call.completed", id: "nobody", payload: {} },
        { type: "call.aborted", id: "nobody", payload: {} },
        { type: "something.else", id: "x", payload: {} },
        request("r-2", { operationId: "/test/null" })
      ])
      expect(answers).toEqual([{ type: "call.responded", id: "r-2", payload: { output: "got null" } }])
      expect(yield* client.call("test/null", null)).toBe("got null")
      yield* expectIdle
    }))

  it.scoped("requests that arrive together on one exchange are all answered, their frames never interleaved", () =>
    Effect.gen(function*() {
      const { expectIdle, transports } = yield* makePair(ops, { transport: { chunkBytes: 5 } })
      const ids = Array.from({ length: 20 }, (_, i) => `m-${i}`)
      const exchange = yield* openRaw(transports[1])
      const frames = ids.map((id) =>
        FrameCodec.encodeFrame(request(id, { operationId: "/test/typed", input: { user: { name: id, age: 1 } } }))
      )
      yield* exchange.sendBytes(Buffer.concat(frames))
      const answers = yield* exchange.receive.pipe(Stream.take(ids.length), Stream.runCollect)
      expect([...answers].map((a) => a.id).sort()).toEqual([...ids].sort())
      for (const answer of answers) expect(answer.payload).toEqual({ output: { ok: true } })
      yield* exchange.close
      yield* expectIdle
    }))

  it.scoped("a peer sending an invalid frame loses that exchange; the connection keeps serving", () =>
    Effect.gen(function*() {
      const { client, expectIdle, transports } = yield* makePair(ops)
      for (const bytes of [[0, 0, 0, 0], [0, 0, 0, 3, 0x7b, 0x7b, 0x7b], [255, 255, 255, 255]]) {
        const exchange = yield* openRaw(transports[1])
        yield* exchange.sendBytes(new Uint8Array(bytes))
        // the server reset the exchange: our read fails with Reset and our writes now fail
        const error = yield* Effect.flip(Stream.runDrain(exchange.receive))
        expect(error.reason).toBe("Reset")
        const write = yield* Effect.exit(exchange.send(request("late", { operationId: "/test/null" })))
        expect(Exit.isFailure(write)).toBe(true)
        yield* exchange.close
        expect(yield* client.call("test/null", null)).toBe("got null")
      }
      yield* expectIdle
    }))
})
