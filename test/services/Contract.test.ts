/**
 * Operations as contracts: a group's handlers come from a layer (what they need is the layer's requirement), declared
 * errors are `Schema.TaggedError` classes with a wire code, and a typed client is derived from the contracts alone.
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Context, Effect, Layer, Schema, Stream } from "effect"
import * as CallClient from "../../src/layers/Client.js"
import * as Node from "../../src/layers/Node.js"
import * as CallError from "../../src/errors/CallError.js"
import * as Contract from "../../src/services/Contract.js"
import * as Operation from "../../src/services/Operation.js"
import * as PeerCompositeEnv from "../../src/services/PeerCompositeEnv.js"

// --- contracts: no code, shared by the server and its clients ---
class NotFriendly extends Schema.TaggedError<NotFriendly>()(
  "NotFriendly",
  { name: Schema.String },
  Contract.declare({ code: "NOT_FRIENDLY", httpStatus: 403, description: "the greeter does not greet that name" })
) {}
class Exhausted extends Schema.TaggedError<Exhausted>()(
  "Exhausted",
  { after: Schema.Number },
  Contract.declare({ code: "EXHAUSTED" })
) {}
class Undeclared extends Schema.TaggedError<Undeclared>()("Undeclared", {}) {}

const Greeter = Contract.group({
  greet: Contract.query("demo/greet", {
    input: Schema.Struct({ name: Schema.String }),
    output: Schema.Struct({ greeting: Schema.String, at: Schema.DateFromNumber }),
    errors: [NotFriendly],
    description: "A greeting for a friendly name."
  }),
  count: Contract.subscription("demo/count", {
    input: Schema.Struct({ to: Schema.Number }),
    output: Schema.Number,
    errors: [Exhausted]
  })
})

// --- the server side: a user service the handlers need ---
class Friends extends Context.Tag("test/Friends")<Friends, { readonly isFriend: (name: string) => boolean }>() {}
class Clock0 extends Context.Tag("test/Clock0")<Clock0, { readonly now: Date }>() {}

const GreeterLive = Greeter.toLayer(Effect.gen(function*() {
  const friends = yield* Friends // read when the layer is built
  return {
    greet: ({ name }) =>
      friends.isFriend(name)
        // read when the handler runs: the layer requires it too
        ? Effect.map(Clock0, ({ now }) => ({ greeting: `hello, ${name}`, at: now }))
        : Effect.fail(new NotFriendly({ name })),
    count: ({ to }) =>
      Stream.concat(
        Stream.range(1, Math.min(to, 3)),
        to > 3 ? Stream.fail(new Exhausted({ after: 3 })) : Stream.empty
      )
  }
}))

// A composing group: its handler calls demo/greet as a child, typed, under its own authority.
const Front = Contract.group({
  welcome: Contract.query("front/welcome", { input: Schema.Struct({ name: Schema.String }), output: Schema.String })
})
const FrontLive = Front.toLayer({
  welcome: ({ name }, ctx) =>
    Contract.invoke(ctx, Greeter.contracts.greet, { name }).pipe(
      Effect.map(({ greeting }) => `${greeting}!`),
      Effect.catchTag("NotFriendly", (e) => Effect.succeed(`not you, ${e.name}`))
    )
}, { welcome: { env: ["demo/greet"], authority: Operation.authority("front", { scopes: ["demo"] }) } })

const at = new Date(1_700_000_000_000)
const nodeLayer = Node.layerMemory({
  operations: Contract.layerRegistry(Greeter, Front).pipe(
    Layer.provide(Layer.merge(GreeterLive, FrontLive)),
    Layer.provide(Layer.succeed(Friends, { isFriend: (name) => name !== "Mallory" })),
    Layer.provide(Layer.succeed(Clock0, { now: at }))
  )
})

describe("Contract", () => {
  it.live("a typed client from contracts only: a success, a typed domain error, a typed stream and its error", () =>
    Effect.gen(function*() {
      const node = yield* Node.Node
      const connection = yield* CallClient.connect(node.transports[0]!.address, { expectedFingerprint: node.fingerprint })
      const client = Contract.client(Greeter, connection)

      const ok = yield* client.greet({ name: "Ada" })
      expect(ok).toEqual({ greeting: "hello, Ada", at })
      expect(ok.at).toBeInstanceOf(Date) // decoded by the contract's output schema

      const refused = yield* Effect.flip(client.greet({ name: "Mallory" }))
      expect(refused).toBeInstanceOf(NotFriendly)
      expect(refused).toMatchObject({ _tag: "NotFriendly", name: "Mallory" })

      // On the wire: call.error with the declared code and the encoded fields as details.
      const raw = yield* Effect.flip(connection.call("demo/greet", { name: "Mallory" }))
      expect(raw).toBeInstanceOf(CallError.CallError)
      expect(raw.toPayload()).toMatchObject({
        code: "NOT_FRIENDLY",
        retryable: false,
        details: { _tag: "NotFriendly", name: "Mallory" }
      })

      expect(Chunk.toArray(yield* Stream.runCollect(client.count({ to: 2 })))).toEqual([1, 2])
      const items: Array<number> = []
      const exhausted = yield* Effect.flip(Stream.runForEach(client.count({ to: 10 }), (n) => Effect.sync(() => items.push(n))))
      expect(items).toEqual([1, 2, 3])
      expect(exhausted).toBeInstanceOf(Exhausted)
      expect(exhausted).toMatchObject({ after: 3 })

      // Protocol errors stay CallErrors: bad input is caught before the call.
      const invalid = yield* Effect.flip(client.greet({ name: 42 as unknown as string }))
      expect(invalid).toBeInstanceOf(CallError.CallError)
      expect((invalid as CallError.CallError).code).toBe("INVALID_INPUT")
    }).pipe(Effect.scoped, Effect.provide(nodeLayer)))

  it.live("a handler composes another contract with Contract.invoke: typed output, typed declared error", () =>
    Effect.gen(function*() {
      const node = yield* Node.Node
      // The node's peer graph is in context too (Node.layer provides it).
      expect(yield* PeerCompositeEnv.PeerCompositeEnv).toBe(node.graph)
      const connection = yield* CallClient.connect(node.transports[0]!.address, { expectedFingerprint: node.fingerprint })
      const front = Contract.client(Front, connection)
      expect(yield* front.welcome({ name: "Ada" })).toBe("hello, Ada!")
      expect(yield* front.welcome({ name: "Mallory" })).toBe("not you, Mallory")
    }).pipe(Effect.scoped, Effect.provide(nodeLayer)))

  it.live("discovery shows the declared errors with their codes and HTTP status", () =>
    Effect.gen(function*() {
      const node = yield* Node.Node
      const connection = yield* CallClient.connect(node.transports[0]!.address, { expectedFingerprint: node.fingerprint })
      const schema = (yield* connection.call("services/schema", { name: "demo/greet" })) as {
        description: string
        error_schemas: Array<{ code: string; description: string; http_status: number | null }>
      }
      expect(schema.description).toBe("A greeting for a friendly name.")
      expect(schema.error_schemas.map(({ code, description, http_status }) => ({ code, description, http_status })))
        .toEqual([{ code: "NOT_FRIENDLY", description: "the greeter does not greet that name", http_status: 403 }])
    }).pipe(Effect.scoped, Effect.provide(nodeLayer)))

  it("a declared error needs its wire code", () => {
    expect(() =>
      Contract.query("demo/bad", { input: Schema.Struct({}), output: Schema.Struct({}), errors: [Undeclared] })
    ).toThrow("Contract.declare({ code })")
  })

  it("compile time: a handler failing with an undeclared error does not typecheck; the layer requires the handlers' services", () => {
    Greeter.toLayer({
      // @ts-expect-error Undeclared is not among demo/greet's declared errors
      greet: () => Effect.fail(new Undeclared()),
      count: () => Stream.empty
    })
    Greeter.toLayer({
      greet: () => Effect.fail(new NotFriendly({ name: "x" })),
      // @ts-expect-error NotFriendly is declared by demo/greet, not by demo/count
      count: () => Stream.fail(new NotFriendly({ name: "x" }))
    })
    // @ts-expect-error a handler is missing
    Greeter.toLayer({ greet: () => Effect.fail(new NotFriendly({ name: "x" })) })
    // What the handlers need is the layer's requirement.
    const needs: Layer.Layer<Contract.Group<typeof Greeter.contracts>, never, Friends | Clock0> = GreeterLive
    // @ts-expect-error the layer is not satisfied without Friends and Clock0
    const satisfied: Layer.Layer<Contract.Group<typeof Greeter.contracts>, never, never> = GreeterLive
    expect([needs, satisfied].every(Layer.isLayer)).toBe(true)
  })
})
