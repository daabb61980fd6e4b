/**
 * The README's engine example, kept runnable and kept identical: the code between the markers below is the README's
 * `ts` block of section "engine" (with `alknet` for the import path), minus its last line, which runs `main`. It uses
 * the public API only (operations, a node from layers on the in-process `Memory` network, a client). Edit both
 * together; the first test fails when they differ.
 */
import { expect, it } from "@effect/vitest"
import { expectReadmeExample } from "../shared/readme.js"

// --- README example (section "engine") ---
import { Effect, Layer, Option, Schema, Stream } from "effect"
import { CallClient, CredentialStore, IdentityStore, Memory, Node, NodeConfig, Operation, RateLimit } from "../../src/index.js"

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

// A node serving them on an in-process network (`memory://`: the same framing and engine as QUIC, no sockets).
const node = Memory.layerListener().pipe(
  Layer.provideMerge(Node.layer()),
  Layer.provideMerge(Layer.mergeAll(Node.layerOperations([greet, countdown]), Node.layerIdentity, RateLimit.layer, Memory.layerDialer)),
  Layer.provideMerge(Layer.mergeAll(IdentityStore.layerMemory(), CredentialStore.layerMemory, NodeConfig.layerStatic({}), Node.layerVault())),
  Layer.provideMerge(Memory.layerNetwork)
)

const program = Effect.gen(function*() {
  const { fingerprint, transports } = yield* Node.Node // [{ kind: "memory", address: "memory://node:1" }]
  // The caller: a peer "alice" with the scope "demo", added to the node's store while it runs, and its bearer token.
  const peers = yield* IdentityStore.IdentityStore
  yield* peers.putPeer({ peer_id: "alice", fingerprints: [], scopes: ["demo"], resources: {}, enabled: true })
  const token = yield* IdentityStore.issuePeerToken("alice")
  const client = yield* CallClient.connect(transports[0]!.address, { expectedFingerprint: fingerprint, token })
  const reply = yield* Operation.call(client, greet, { name: "Ada" }) // typed: { greeting: string }
  const numbers = yield* Stream.runCollect(client.subscribe("demo/countdown", { from: 3 }))
  return `${reply.greeting}; ${[...numbers].join(", ")}`
})

const main = program.pipe(Effect.scoped, Effect.provide(node))
// --- end of README example ---

it.effect("README: the engine example is this file's code", () => expectReadmeExample(import.meta.url, "engine"))

it.live("README: the engine example serves the scoped operation to the peer's token and streams the countdown", () =>
  Effect.gen(function*() {
    expect(yield* main).toBe("hello Ada, from alice; 3, 2, 1, 0")
    // Without the token the caller is anonymous: the scoped operation is refused, the open one still streams.
    const anonymous = yield* Effect.gen(function*() {
      const { fingerprint, transports } = yield* Node.Node
      const client = yield* CallClient.connect(transports[0]!.address, { expectedFingerprint: fingerprint })
      const denied = yield* Effect.flip(client.call("demo/greet", { name: "Eve" }))
      const numbers = yield* Stream.runCollect(client.subscribe("demo/countdown", { from: 1 }))
      return { denied: [denied.code, denied.message], numbers: [...numbers] }
    }).pipe(Effect.scoped, Effect.provide(node))
    expect(anonymous).toEqual({ denied: ["FORBIDDEN", "authentication required"], numbers: [1, 0] })
  }))
