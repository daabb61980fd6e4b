/**
 * Property-based test (fast-check) of the dispatcher (issue #19 item 6): any operation name, any JSON input (deep
 * included), any identity → a result, or a `CallError` with a protocol code (or the operation's declared domain
 * code) and a bounded message; never a defect, never an error in the logs. Bounded run count for a 2-core CI box.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Logger, LogLevel, Option, Runtime, Schema, Stream } from "effect"
import fc from "fast-check"
import * as Discovery from "../../src/call/Discovery.js"
import * as Dispatcher from "../../src/call/Dispatcher.js"
import * as CallError from "../../src/errors/CallError.js"
import * as Operation from "../../src/services/Operation.js"
import * as OperationRegistry from "../../src/services/OperationRegistry.js"

interface Tree {
  readonly children: ReadonlyArray<Tree>
}
const Tree: Schema.Schema<Tree> = Schema.Struct({
  children: Schema.Array(Schema.suspend((): Schema.Schema<Tree> => Tree))
})

const ops = [
  Operation.query({ name: "t/any", input: Schema.Unknown, output: Schema.Unknown, handler: Effect.succeed }),
  Operation.mutation({
    name: "t/struct",
    input: Schema.Struct({ name: Schema.String, age: Schema.Int, tags: Schema.optional(Schema.Array(Schema.String)) }),
    output: Schema.String,
    handler: ({ name }) => Effect.succeed(name)
  }),
  Operation.query({ name: "t/tree", input: Tree, output: Schema.Number, handler: () => Effect.succeed(1) }),
  Operation.query({
    name: "t/union",
    input: Schema.Union(Schema.Literal("a"), Schema.Struct({ n: Schema.Number }), Schema.Array(Schema.NumberFromString)),
    output: Schema.Null,
    handler: () => Effect.succeed(null)
  }),
  Operation.query({
    name: "t/guarded",
    input: Schema.Unknown,
    output: Schema.Null,
    access: { requiredScopes: ["x"], resourceType: "r", resourceAction: "read" },
    handler: () => Effect.succeed(null)
  }),
  Operation.query({
    name: "t/hidden",
    visibility: "internal",
    input: Schema.Unknown,
    output: Schema.Null,
    handler: () => Effect.succeed(null)
  }),
  Operation.subscription({
    name: "t/sub",
    input: Schema.Struct({ count: Schema.Int.pipe(Schema.between(0, 5)) }),
    output: Schema.Number,
    handler: ({ count }) => Stream.range(1, count, 2).pipe(Stream.take(count))
  }),
  Operation.query({
    name: "t/fails",
    input: Schema.Struct({ code: Schema.String }),
    output: Schema.Null,
    errors: [Operation.error({ code: "DECLARED", description: "a declared failure" })],
    handler: ({ code }) => Effect.fail(CallError.domain(code, `failed with ${code}`))
  }),
  // Composes whatever the caller names, with whatever input: the child's checks must hold too.
  Operation.query({
    name: "t/compose",
    input: Schema.Struct({ name: Schema.String, input: Schema.Unknown }),
    output: Schema.Unknown,
    handler: ({ input, name }, ctx) => ctx.env.invoke(name, input)
  }).with({ env: ["t/any", "t/struct", "t/tree", "t/union", "t/guarded", "t/hidden", "t/sub", "t/fails"] })
]

const names = [...ops.map((o) => o.spec.name), Discovery.LIST, Discovery.SCHEMA]
const anyString = fc.string({ unit: "binary", maxLength: 30 })
const name = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...names).chain((n) => fc.constantFrom(n, `/${n}`)) },
  { weight: 1, arbitrary: anyString },
  { weight: 1, arbitrary: fc.string({ minLength: 300, maxLength: 3_000 }) }
)
const json = fc.jsonValue({ maxDepth: 4 })
/** A deep value: built by JSON.parse (never printed: fast-check shows the arbitrary's inputs, depth and shape). */
const deep = fc.record({ depth: fc.integer({ min: 60, max: 10_000 }), shape: fc.constantFrom("array", "object") })
const deepValue = ({ depth, shape }: { depth: number; shape: string }): unknown =>
  JSON.parse(shape === "array" ? "[".repeat(depth) + "]".repeat(depth) : "{\"a\":".repeat(depth) + "0" + "}".repeat(depth))
type Input = { readonly json: unknown } | { readonly deep: { depth: number; shape: string }; readonly at: string }
const input: fc.Arbitrary<Input> = fc.oneof(
  { weight: 3, arbitrary: json.map((j) => ({ json: j })) },
  {
    weight: 3,
    arbitrary: fc.record({
      name: fc.oneof(anyString, json, fc.constantFrom(...names)),
      age: fc.oneof(fc.integer(), fc.double(), json),
      tags: fc.oneof(fc.array(anyString), json),
      input: json,
      children: fc.oneof(fc.constant([]), json),
      count: fc.oneof(fc.integer({ min: -2, max: 8 }), json),
      code: fc.oneof(fc.constant("DECLARED"), anyString),
      n: fc.oneof(fc.double(), json)
    }, { requiredKeys: [] }).map((j) => ({ json: j }))
  },
  {
    weight: 1,
    arbitrary: fc.record({ deep, at: fc.constantFrom("root", "name", "input", "children", "ms") })
  }
)
const materialize = (i: Input): unknown => {
  if ("json" in i) return i.json
  const value = deepValue(i.deep)
  return i.at === "root" ? value : i.at === "input" ? { name: "t/any", input: value } : { [i.at]: value }
}
const identity = fc.option(
  fc.record({
    id: anyString,
    scopes: fc.subarray(["x", "y"]),
    resources: fc.oneof(fc.constant({}), fc.constant({ r: ["read"] }), fc.constant({ r: ["write"] }))
  }),
  { nil: undefined }
)

const allowedCodes = new Set<string>([...CallError.PROTOCOL_CODES, "DECLARED"])

describe("dispatcher (property-based)", () => {
  it.scoped("any name, input and identity: a result or a protocol CallError with a bounded message, never a defect", () =>
    Effect.gen(function*() {
      const logged: Array<string> = []
      const logger = Logger.replace(
        Logger.defaultLogger,
        Logger.make(({ logLevel, message }) => {
          if (LogLevel.greaterThanEqual(logLevel, LogLevel.Warning)) logged.push(`${logLevel.label} ${String(message)}`)
        })
      )
      const source = Discovery.withDiscovery(OperationRegistry.sourceOf(ops))
      const dispatcher = yield* Dispatcher.make({ source })
      const runtime = yield* Effect.runtime<never>()
      const run = (request: Dispatcher.RootRequest) =>
        Effect.flatMap(dispatcher.prepare(request, "any"), (prepared) =>
          prepared._tag === "Unary" ? prepared.run : Stream.runCollect(prepared.run)
        ).pipe(Effect.provide(logger), Effect.exit)

      yield* Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(name, input, identity, async (op, raw, who) => {
            const request = OperationRegistry.localRequest(op, materialize(raw), {
              identity: who === undefined ? Option.none() : Option.some(who)
            })
            const exit = await Runtime.runPromise(runtime)(run(request))
            if (Exit.isSuccess(exit)) return
            expect(Cause.isDie(exit.cause)).toBe(false)
            expect(Cause.isInterrupted(exit.cause)).toBe(false)
            const failure = Cause.failureOption(exit.cause)
            expect(Option.isSome(failure) && failure.value instanceof CallError.CallError).toBe(true)
            if (Option.isSome(failure)) {
              const error = failure.value
              expect(allowedCodes.has(error.code)).toBe(true)
              // the longest a message gets: 2 echoed fragments of 200 and their markers, plus fixed text
              expect(error.message.length).toBeLessThanOrEqual(2 * CallError.ECHO_LIMIT + 150)
            }
            expect(logged).toEqual([])
          }),
          { numRuns: 400 }
        )
      )
      expect(dispatcher.running()).toBe(0)
      expect(dispatcher.detached()).toBe(0)
    }))
})
