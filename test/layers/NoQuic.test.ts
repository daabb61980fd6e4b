/**
 * A WebSocket-only node and client never load QUIC: the transport is chosen by layer, and the QUIC backend (and its
 * native addon) is loaded only by the layers that use it. Its own test file, so its worker process has run nothing
 * else (vitest `pool: "forks"`).
 */
import { expect, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { CallClient, CredentialStore, Dialers, IdentityStore, Node, NodeConfig, Operation, RateLimit } from "../../src/index.js"

const loadedAddons = () =>
  ((process.report.getReport() as unknown as { sharedObjects: Array<string> }).sharedObjects).filter((s) =>
    s.endsWith(".node")
  )

const echo = Operation.query({
  name: "demo/echo",
  input: Schema.Struct({ text: Schema.String }),
  output: Schema.Struct({ text: Schema.String }),
  handler: (input) => Effect.succeed(input)
})

it.live("a WebSocket-only node and client work without loading @matrixai/quic", () =>
  Effect.gen(function*() {
    const node = yield* Node.Node
    const client = yield* CallClient.connect(node.transports[0]!.address, { expectedFingerprint: node.fingerprint })
    expect(yield* client.call("demo/echo", { text: "no QUIC" })).toEqual({ text: "no QUIC" })
    expect(loadedAddons().filter((s) => s.includes("quic"))).toEqual([])
  }).pipe(
    Effect.scoped,
    Effect.provide(
      Node.layerWebSocket({ host: "127.0.0.1", port: 0 }).pipe(
        Layer.provideMerge(Node.layer()),
        Layer.provideMerge(Layer.mergeAll(
          Node.layerOperations([echo]),
          RateLimit.layer,
          Node.layerIdentity,
          Dialers.layerWebSocket
        )),
        Layer.provideMerge(Layer.mergeAll(IdentityStore.layerMemory(), CredentialStore.layerMemory)),
        Layer.provideMerge(Layer.mergeAll(NodeConfig.layerStatic({}), Node.layerVault()))
      )
    )
  ))

it.live("the same program with the QUIC dialer does load it (the check above can fail)", () =>
  Effect.gen(function*() {
    const refused = yield* Effect.flip(CallClient.connect("quic://127.0.0.1:9", { expectedFingerprint: "x" }, {
      connectTimeout: "200 millis"
    }))
    expect(refused._tag).toBe("EndpointError")
    expect(loadedAddons().filter((s) => s.includes("quic")).length).toBe(1)
  }).pipe(Effect.scoped, Effect.provide(Dialers.layerQuic)))

it.live("CallClient.layer needs nothing and uses the Dialer in context when it is built with one", () =>
  Effect.gen(function*() {
    const client = yield* CallClient.CallClient
    const refused = yield* Effect.flip(client.connect("quic://127.0.0.1:9", { expectedFingerprint: "x" }))
    expect([refused.reason, refused.message]).toEqual([
      "Config",
      "cannot dial quic://127.0.0.1:9: this client has no quic transport (it dials ws, wss)"
    ])
  }).pipe(Effect.scoped, Effect.provide(CallClient.layer.pipe(Layer.provide(Dialers.layerWebSocket)))))
