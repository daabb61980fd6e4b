/**
 * Hostile input at the dispatcher (issues #19, #20): deep JSON is INVALID_INPUT before any schema sees it, root and
 * composed, and no error text repeats more than a bounded part of what the caller sent.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Logger, Schema, Stream } from "effect"
import * as Dispatcher from "../../src/call/Dispatcher.js"
import { fromCall } from "../../src/peer/FromCall.js"
import * as CallError from "../../src/errors/CallError.js"
import * as Json from "../../src/schema/Json.js"
import * as Operation from "../../src/services/Operation.js"
import * as OperationRegistry from "../../src/services/OperationRegistry.js"

const nested = (levels: number): unknown => JSON.parse("[".repeat(levels) + "]".repeat(levels))
const nestedObject = (levels: number): unknown => JSON.parse("{\"a\":".repeat(levels) + "1" + "}".repeat(levels))

/** An input type that recurses: Schema decoding of it recurses once per level. */
interface Tree {
  readonly children: ReadonlyArray<Tree>
}
const Tree: Schema.Schema<Tree> = Schema.Struct({
  children: Schema.Array(Schema.suspend((): Schema.Schema<Tree> => Tree))
})

const any = Operation.query({ name: "t/any", input: Schema.Unknown, output: Schema.Unknown, handler: Effect.succeed })
const tree = Operation.query({ name: "t/tree", input: Tree, output: Schema.Number, handler: () => Effect.succeed(1) })
const slow = Operation.query({
  name: "t/slow",
  input: Schema.Struct({ ms: Schema.optional(Schema.Number) }),
  output: Schema.Number,
  handler: ({ ms }) => Effect.succeed(ms ?? 0)
})
/** Composes `t/any` with the input it was given, so the child's depth check is what answers. */
const composer = Operation.query({
  name: "t/compose",
  input: Schema.Unknown,
  output: Schema.Unknown,
  handler: (input, ctx) => ctx.env.invoke("t/any", (input as { child: unknown }).child)
}).with({ env: ["t/any"] })

const registry = OperationRegistry.make([any, tree, slow, composer])

const invalidInput = (message: string) => ({ code: "INVALID_INPUT", message, retryable: false })
const tooDeep = invalidInput("input is nested deeper than 64 levels")

/** Every log line, to show what the node would write. */
const capture = (lines: Array<string>) =>
  Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => void lines.push(String(message))))

describe("deep JSON input", () => {
  it.scoped("a root call with 100,000 levels answers INVALID_INPUT (not INTERNAL), whatever the input schema", () =>
    Effect.gen(function*() {
      const { invoke } = yield* registry
      for (const name of ["t/any", "t/tree", "t/slow", "services/schema"]) {
        for (const input of [nested(100_000), nestedObject(100_000), { ms: nested(100_000) }, { name: nested(65) }]) {
          const error = yield* Effect.flip(invoke(name, input))
          expect(error.toPayload()).toEqual(tooDeep)
        }
      }
    }))

  it.scoped("64 levels are valid input, 65 are not; a recursive schema gets no deeper than the limit", () =>
    Effect.gen(function*() {
      const { invoke } = yield* registry
      expect(yield* invoke("t/any", nested(64))).toEqual(nested(64))
      expect((yield* Effect.flip(invoke("t/any", nested(65)))).toPayload()).toEqual(tooDeep)
      let value: Tree = { children: [] }
      for (let i = 1; i < 32; i++) value = { children: [value] } // {children:[…]} = 2 levels each: 63 in all
      expect(yield* invoke("t/tree", value)).toBe(1)
      expect((yield* Effect.flip(invoke("t/tree", { children: [value] }))).toPayload()).toEqual(tooDeep)
    }))

  it.scoped("access control runs first: a caller who may not call gets FORBIDDEN, not a word about its input", () =>
    Effect.gen(function*() {
      const guarded = Operation.query({
        name: "t/guarded",
        input: Schema.Unknown,
        output: Schema.Null,
        access: { requiredScopes: ["x"] },
        handler: () => Effect.succeed(null)
      })
      const { invoke } = yield* OperationRegistry.make([guarded])
      expect((yield* Effect.flip(invoke("t/guarded", nested(1000)))).code).toBe("FORBIDDEN")
    }))

  it.scoped("a composed call (env.invoke) checks the child's input the same way", () =>
    Effect.gen(function*() {
      const { invoke } = yield* registry
      expect(yield* invoke("t/compose", { child: nested(60) })).toEqual(nested(60))
      // the root input is 1 level deeper than the child's: within the limit at the root, too deep for the child
      const error = yield* Effect.flip(invoke("t/compose", { child: { deeper: nested(64) } }))
      expect(error.toPayload()).toEqual(tooDeep)
    }))

  it.scoped("the maximum is a dispatcher (and registry) option; invokeRegistration applies it", () =>
    Effect.gen(function*() {
      const source = OperationRegistry.sourceOf([any, composer])
      const dispatcher = yield* Dispatcher.make({ source, maxInputDepth: 3 })
      const root = (input: unknown) =>
        Effect.flatMap(
          dispatcher.prepare(OperationRegistry.localRequest("t/any", input), "unary"),
          (prepared) => prepared._tag === "Unary" ? prepared.run : Effect.die("not unary")
        )
      expect(yield* root([[[1]]])).toEqual([[[1]]])
      expect((yield* Effect.flip(root([[[[1]]]]))).toPayload()).toEqual(
        invalidInput("input is nested deeper than 3 levels")
      )
      const viaComposer = (child: unknown) =>
        Effect.flatMap(
          dispatcher.prepare(OperationRegistry.localRequest("t/compose", { child }), "unary"),
          (prepared) => prepared._tag === "Unary" ? prepared.run : Effect.die("not unary")
        )
      expect((yield* Effect.flip(viaComposer([[[[1]]]]))).message).toBe("input is nested deeper than 3 levels")
      expect(Json.DEFAULT_MAX_DEPTH).toBe(64)
      // and a registry passes it on
      const registry = yield* OperationRegistry.make([any], { maxInputDepth: 2 })
      expect(yield* registry.invoke("t/any", [[1]])).toEqual([[1]])
      expect((yield* Effect.flip(registry.invoke("t/any", [[[1]]]))).message).toBe("input is nested deeper than 2 levels")
    }))

  it.scoped("nothing is logged for deep input (bad input is not an error of the node)", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const { invoke } = yield* registry
      yield* Effect.flip(invoke("t/slow", { ms: nestedObject(100_000) })).pipe(Effect.provide(capture(lines)))
      expect(lines).toEqual([])
    }))
})

describe("deep JSON output", () => {
  it.effect("a typed call (Operation.call) answers INTERNAL for an output nested too deep, instead of overflowing", () =>
    Effect.gen(function*() {
      const typed = Operation.query({
        name: "t/typed",
        input: Schema.Null,
        output: Schema.Struct({ n: Schema.Number }),
        handler: () => Effect.succeed({ n: 1 })
      })
      // a hostile remote: it answers anything with 100,000 levels of arrays
      const hostile = { call: () => Effect.succeed(nested(100_000)) }
      const error = yield* Effect.flip(Operation.call(hostile, typed, null))
      expect(error.toPayload()).toEqual({
        code: "INTERNAL",
        message: "invalid output from t/typed: output is nested deeper than 64 levels",
        retryable: false
      })
      // within the limit, a mismatch is described as before
      const shallow = yield* Effect.flip(Operation.call({ call: () => Effect.succeed(nested(3)) }, typed, null))
      expect(shallow.message).toMatch(/^invalid output from t\/typed: /)
    }))

  it.effect("from_call discovery: a remote answering services/list with deep JSON is SchemaParse, not a crash", () =>
    Effect.gen(function*() {
      const remote = {
        call: () => Effect.succeed({ operations: nested(100_000) }),
        subscribe: () => Stream.empty
      }
      const error = yield* Effect.flip(fromCall(remote, { label: "w1" }).import())
      expect(error.reason).toBe("SchemaParse")
      expect(error.message).toBe("w1: services/list is malformed: services/list is nested deeper than 64 levels")
    }))
})

describe("bounded echo", () => {
  it("echo keeps 200 characters and says how long the value was; short text is unchanged", () => {
    expect(CallError.ECHO_LIMIT).toBe(200)
    expect(CallError.echo("short")).toBe("short")
    expect(CallError.echo("x".repeat(200))).toBe("x".repeat(200))
    expect(CallError.echo("x".repeat(100_000))).toBe(`${"x".repeat(200)}…(truncated, 100000 characters)`)
    // never half a surrogate pair
    const emoji = "a" + "😀".repeat(150)
    expect(CallError.echo(emoji)).toBe(`a${"😀".repeat(99)}…(truncated, ${emoji.length} characters)`)
  })

  it.scoped("INVALID_INPUT repeats at most 200 characters of the offending value (and of its path)", () =>
    Effect.gen(function*() {
      const { invoke } = yield* registry
      const ms = "9".repeat(100_000)
      const error = yield* Effect.flip(invoke("t/slow", { ms }))
      expect(error.code).toBe("INVALID_INPUT")
      // the schema's message is `Expected number, actual "999…"` (100,026 characters): its first 200 are kept
      expect(error.message).toBe(
        `invalid input at ms: Expected number, actual "${"9".repeat(175)}…(truncated, 100026 characters)`
      )
      const key = "k".repeat(100_000)
      const byKey = yield* Effect.flip(invoke("t/tree", { children: [{ [key]: 1 }] }))
      expect(byKey.message).toBe("missing required field: children.0.children")
      const wide = yield* Effect.flip(invoke("t/tree", { children: Array.from({ length: 20_000 }, () => 1) }))
      expect(wide.message.length).toBeLessThan(2 * CallError.ECHO_LIMIT + 100)
    }))

  it.scoped("NOT_FOUND repeats at most 200 characters of an operation name", () =>
    Effect.gen(function*() {
      const { invoke } = yield* registry
      const name = `x/${"y".repeat(100_000)}`
      const error = yield* Effect.flip(invoke(name, null))
      expect(error.message).toBe(`operation not found: ${name.slice(0, 200)}…(truncated, 100002 characters)`)
      const schema = yield* Effect.flip(invoke("services/schema", { name }))
      expect(schema.message).toBe(error.message)
    }))

  it("every message is bounded, also one received off the wire", () => {
    const huge = "z".repeat(100_000)
    const mine = CallError.domain("E", huge)
    expect(mine.message.length).toBeLessThanOrEqual(CallError.MESSAGE_LIMIT + 40)
    const remote = CallError.fromPayload({ code: huge, message: huge, retryable: false })
    expect(remote.message).toBe(CallError.echo(huge, CallError.MESSAGE_LIMIT))
    expect(remote.code.length).toBeLessThanOrEqual(CallError.MESSAGE_LIMIT + 40)
    expect(remote.protocolCode).toBe("INTERNAL")
  })

  it("a describeInputIssue message stays bounded whatever the schema reports", () => {
    const decoded = Schema.decodeUnknownEither(Schema.Struct({ a: Schema.Literal("x") }))({ a: "b".repeat(10_000) })
    expect(Either.isLeft(decoded)).toBe(true)
    if (Either.isLeft(decoded)) {
      const message = Dispatcher.describeInputIssue(decoded.left.issue)
      expect(message.startsWith("invalid input at a: ")).toBe(true)
      expect(message).toContain("…(truncated, ")
    }
  })
})
