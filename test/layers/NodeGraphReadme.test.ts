/**
 * The README's service-graph example, kept runnable and kept identical: the code between the markers below is the
 * README's `ts` block of section "graph" (with `alknet` for the import path), minus its last line, which runs `main`.
 * Edit both together; the first test fails when they differ.
 */
import { expect, it } from "@effect/vitest"
import { expectReadmeExample } from "../shared/readme.js"

// --- README example (section "graph") ---
import { Context, Effect, Layer, Option, Redacted, Schema } from "effect"
import { CallClient, Contract, CredentialStore, Dialers, IdentityProvider, Node, NodeConfig, RateLimit } from "../../src/index.js"

// The contract: shared by the node and its clients, no code.
class NotFriendly extends Schema.TaggedError<NotFriendly>()("NotFriendly", { name: Schema.String },
  Contract.declare({ code: "NOT_FRIENDLY", httpStatus: 403 })) {}

const Greeter = Contract.group({
  greet: Contract.query("demo/greet", {
    input: Schema.Struct({ name: Schema.String }),
    output: Schema.String,
    errors: [NotFriendly],
    access: { requiredScopes: ["demo"] }
  })
})

// A service of your program; the handlers' layer reads it, so the node's layer requires it.
class Greeting extends Context.Tag("app/Greeting")<Greeting, { readonly word: string }>() {}

const GreeterLive = Greeter.toLayer(Effect.gen(function*() {
  const { word } = yield* Greeting
  return {
    greet: ({ name }) => name === "Mallory" ? Effect.fail(new NotFriendly({ name })) : Effect.succeed(`${word}, ${name}`)
  }
}))

// Who is calling: your directory instead of alknet's stores (here: the bearer token "let-me-in" is alice).
const directory = Layer.succeed(IdentityProvider.IdentityProvider, {
  resolveFingerprint: () => Effect.succeed(Option.none()),
  resolveToken: (token) =>
    Effect.succeed(
      Redacted.value(token) === "let-me-in" ? Option.some({ id: "alice", scopes: ["demo"], resources: {} }) : Option.none()
    )
})

const operations = Contract.layerRegistry(Greeter).pipe(Layer.provide(GreeterLive))

const node = Node.layerWebSocket({ host: "127.0.0.1", port: 0, tls: false }).pipe(
  Layer.provideMerge(Node.layer()),
  Layer.provideMerge(Layer.mergeAll(operations, directory, RateLimit.layer, CredentialStore.layerMemory, Dialers.layerWebSocket)),
  Layer.provideMerge(Layer.mergeAll(NodeConfig.layerStatic({}), Node.layerVault())),
  Layer.provide(Layer.succeed(Greeting, { word: "hello" }))
)

const program = Effect.gen(function*() {
  const { transports } = yield* Node.Node // [{ kind: "ws", address: "ws://127.0.0.1:PORT" }]
  const connection = yield* CallClient.connect(transports[0]!.address, { token: Redacted.make("let-me-in") })
  const client = Contract.client(Greeter, connection)
  const refused = yield* Effect.flip(client.greet({ name: "Mallory" })) // a NotFriendly, decoded
  return `${yield* client.greet({ name: "Ada" })}; ${refused._tag} ${refused.name}`
})

const main = program.pipe(Effect.scoped, Effect.provide(node))
// --- end of README example ---

it.effect("README: the service-graph example is this file's code", () => expectReadmeExample(import.meta.url, "graph"))

it.live("README: the service-graph example answers with the program's service; the provider decides who may call", () =>
  Effect.gen(function*() {
    expect(yield* main).toBe("hello, Ada; NotFriendly Mallory")
    // Without the token the caller is anonymous to the user's provider: the scoped operation is refused.
    const denied = yield* Effect.gen(function*() {
      const { transports } = yield* Node.Node
      const client = yield* CallClient.connect(transports[0]!.address)
      return yield* Effect.flip(client.call("demo/greet", { name: "Eve" }))
    }).pipe(Effect.scoped, Effect.provide(node))
    expect([denied.code, denied.message]).toEqual(["FORBIDDEN", "authentication required"])
  }))
