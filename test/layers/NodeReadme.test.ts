/**
 * The README's library example, kept runnable and kept identical: the code between the markers below is the
 * README's first `ts` block of section "library" (with `alknet` for the import path), minus its last line, which runs
 * `main`. Edit both together; the first test fails when they differ.
 */
import { expect, it } from "@effect/vitest"
import * as fs from "node:fs/promises"

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

const RUN = "Effect.runPromise(main)"

const between = (text: string, start: string, end: string): string => {
  const from = text.indexOf(start)
  const to = text.indexOf(end, from + start.length)
  if (from < 0 || to < 0) throw new Error(`markers not found: ${start} … ${end}`)
  return text.slice(from + start.length, to)
}

it.effect("README: the library example is this file's code", () =>
  Effect.gen(function*() {
    const readme = yield* Effect.promise(() => fs.readFile(new URL("../../README.md", import.meta.url), "utf8"))
    const self = yield* Effect.promise(() => fs.readFile(new URL(import.meta.url), "utf8"))
    const section = between(readme, "<!-- section:library -->", "<!-- /section:library -->")
    const block = between(section, "```ts\n", "```").trimEnd().split("\n")
    expect(block.at(-1)).toMatch(new RegExp(`^${RUN.replace(/[()]/g, "\\$&")}`))
    const code = between(self, "// --- README example (section \"library\") ---\n", "// --- end of README example ---")
    expect(block.slice(0, -1).join("\n").trim()).toBe(code.replace("\"../../src/index.js\"", "\"alknet\"").trim())
  }))

it.live("README: the library example serves and answers", () =>
  Effect.gen(function*() {
    expect(yield* main).toBe("hello, Ada")
  }))
