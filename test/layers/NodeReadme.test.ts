/**
 * The README's library example, kept runnable and kept identical: the code between the markers below is the
 * README's first `ts` block of section "library" (with `alknet` for the import path), minus its last line, which runs
 * `main`. Edit both together; the first test fails when they differ.
 */
import { expect, it } from "@effect/vitest"
import { expectReadmeExample } from "../shared/readme.js"

// --- README example (section "library") ---
import { Effect, Schema } from "effect"
import { CallClient, Node, Operation } from "../../src/index.js"

const hello = Operation.query({
  name: "demo/hello",
  input: Schema.Struct({ name: Schema.String }),
  output: Schema.String,
  handler: ({ name }) => Effect.succeed(`hello, ${name}`)
})

// Any Effect program can use the node; this one calls it over QUIC, as another process would.
const program = Effect.gen(function*() {
  const node = yield* Node.Node
  const quic = node.transports[0]! // quic://127.0.0.1:PORT, a free port
  const client = yield* CallClient.connect(quic.address, { expectedFingerprint: node.fingerprint })
  return yield* Operation.call(client, hello, { name: "Ada" }) // typed: string
})

// The node lives as long as its layer: it listens before `program` runs, and drains and closes after it.
const main = program.pipe(Effect.scoped, Effect.provide(Node.layerMemory({ operations: [hello] })))
// --- end of README example ---

it.effect("README: the library example is this file's code", () => expectReadmeExample(import.meta.url, "library"))

it.live("README: the library example serves and answers", () =>
  Effect.gen(function*() {
    expect(yield* main).toBe("hello, Ada")
  }))
