/** The README's engine example, kept runnable: an operation defined with Effect Schema, called over the in-memory transport. */
import { expect, it } from "@effect/vitest"
import { Effect, Option, Schema, Stream } from "effect"
import { CallConnection, InMemoryTransport, Operation, OperationRegistry } from "../../src/index.js"

// --- README example (section "engine") ---
const greet = Operation.query({
  name: "demo/greet",
  input: Schema.Struct({ name: Schema.String }),
  output: Schema.Struct({ greeting: Schema.String }),
  access: { requiredScopes: ["demo"] },
  handler: ({ name }, ctx) =>
    Effect.succeed({ greeting: `hello ${name}, from ${Option.getOrElse(Option.map(ctx.identity, (i) => i.id), () => "?")}` })
})

const countdown = Operation.subscription({
  name: "demo/countdown",
  input: Schema.Struct({ from: Schema.Int }),
  output: Schema.Int,
  handler: ({ from }) => Stream.iterate(from, (n) => n - 1).pipe(Stream.take(from + 1))
})

const program = Effect.gen(function*() {
  const registry = yield* OperationRegistry.make([greet, countdown])
  const [serverSide, clientSide] = yield* InMemoryTransport.makePair()
  // The serving side; over QUIC its identity would come from the peer's key fingerprint.
  yield* CallConnection.make(serverSide, {
    source: registry.source,
    identify: () => Effect.succeed(Option.some({ id: "alice", scopes: ["demo"], resources: {} }))
  })
  const client = yield* CallConnection.make(clientSide)
  const reply = yield* Operation.call(client, greet, { name: "Ada" }) // typed: { greeting: string }
  const numbers = yield* Stream.runCollect(client.subscribe("demo/countdown", { from: 3 }))
  return { reply, numbers: [...numbers] }
})
// --- end of README example ---

it.scoped("the README engine example runs", () =>
  Effect.gen(function*() {
    const { numbers, reply } = yield* program
    expect(reply).toEqual({ greeting: "hello Ada, from alice" })
    expect(numbers).toEqual([3, 2, 1, 0])
  }))
