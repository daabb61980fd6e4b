/** The README's transports example, kept runnable: if this breaks, the README is wrong. */
import { expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { CallClient, CallProtocol, Operation, OperationRegistry, Quic, Tls, WebSocket } from "../../src/index.js"

it.live("README: serve an operation over QUIC and WebSocket, call it from a client", () =>
  Effect.gen(function*() {
    // --- README example starts
    const echo = Operation.query({
      name: "demo/echo",
      input: Schema.Struct({ text: Schema.String }),
      output: Schema.Struct({ text: Schema.String }),
      handler: (input) => Effect.succeed(input)
    })
    const registry = yield* OperationRegistry.make([echo])
    const serve = { source: registry.source } // + authenticator, maxAuthAttempts, admit …
    const identity = Tls.RawKey(new Uint8Array(32).fill(1)) // e.g. the vault's node identity key

    const endpoint = yield* Quic.makeEndpoint({
      host: "127.0.0.1",
      port: 0,
      identity,
      handlers: { [CallProtocol.ALPN]: CallProtocol.handler(serve) }
    })
    const ws = yield* WebSocket.listen({
      host: "127.0.0.1",
      port: 0,
      identity,
      onConnection: CallProtocol.webSocketHandler(serve)
    })

    // A client pins the server's fingerprint (an unknown self-signed server fails closed).
    const quic = yield* CallClient.connect(`quic://127.0.0.1:${endpoint.address.port}`, {
      expectedFingerprint: endpoint.fingerprint
    })
    const overWs = yield* CallClient.connect(ws.url, { expectedFingerprint: endpoint.fingerprint })
    const a = yield* quic.call("demo/echo", { text: "over QUIC" }) // { text: "over QUIC" }
    const b = yield* overWs.call("demo/echo", { text: "over WebSocket" }) // { text: "over WebSocket" }
    // --- README example ends
    expect(a).toEqual({ text: "over QUIC" })
    expect(b).toEqual({ text: "over WebSocket" })
  }).pipe(Effect.scoped))
