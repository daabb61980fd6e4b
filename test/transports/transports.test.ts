import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Option, Schema } from "effect"
import { WebSocket as RawWebSocket } from "ws"
import * as Quic from "../../src/layers/quic/Quic.js"
import * as WebSocket from "../../src/layers/ws/WebSocket.js"
import * as CallClient from "../../src/layers/Client.js"
import * as CallProtocol from "../../src/services/CallProtocol.js"
import type { BidiStream } from "../../src/services/Endpoint.js"
import * as Operation from "../../src/services/Operation.js"
import * as OperationRegistry from "../../src/services/OperationRegistry.js"
import * as Tls from "../../src/services/Tls.js"
import { transportSuite } from "./suite.js"

const frameHeader = (length: number) => {
  const header = Buffer.alloc(4)
  header.writeUInt32BE(length, 0)
  return header
}

/** Send raw bytes on a fresh QUIC stream and expect the node to reset that stream. */
const quicGarbage = (bytes: Uint8Array) => (url: string, fingerprint: string) =>
  Effect.gen(function*() {
    const { hostname, port } = new URL(url)
    const connection = yield* Quic.connect(
      { host: hostname, port: Number(port) },
      { alpn: CallProtocol.ALPN, expectedFingerprint: fingerprint }
    )
    const stream: BidiStream = yield* connection.openBidi
    yield* stream.write(bytes)
    const readToEnd = Effect.iterate(Option.some(new Uint8Array()) as Option.Option<Uint8Array>, {
      while: Option.isSome,
      body: () => stream.read
    })
    const result = yield* Effect.either(readToEnd)
    expect(Either.isLeft(result)).toBe(true)
  })

transportSuite({
  name: "QUIC",
  listen: (identity, options, extra) =>
    Effect.map(
      Quic.makeEndpoint({
        host: "127.0.0.1",
        port: 0,
        identity,
        handlers: { [CallProtocol.ALPN]: CallProtocol.handler(options) },
        ...(extra?.drainTimeout === undefined ? {} : { drainTimeout: extra.drainTimeout })
      }),
      (endpoint) => ({ url: `quic://127.0.0.1:${endpoint.address.port}`, fingerprint: endpoint.fingerprint })
    ),
  garbage: [
    { name: "a zero-length frame", send: quicGarbage(frameHeader(0)) },
    { name: "a frame length of 64 MiB + 1", send: quicGarbage(frameHeader(64 * 1024 * 1024 + 1)) },
    { name: "a frame of bad JSON", send: quicGarbage(Buffer.concat([frameHeader(5), Buffer.from("{nope")])) },
    {
      name: "a frame that is not an envelope",
      send: quicGarbage(Buffer.concat([frameHeader(7), Buffer.from('{"a":1}')]))
    }
  ]
})

/** Send one raw WebSocket message and expect the node to close the socket with `code`. */
const wsGarbage = (data: string | Buffer, code: number) => (url: string) =>
  Effect.gen(function*() {
    const closed = yield* Effect.async<number>((resume) => {
      // A hostile peer: it does not verify the server, it only wants to be rude to it.
      const socket = new RawWebSocket(new URL(WebSocket.CALL_PATH, url), { rejectUnauthorized: false })
      socket.on("open", () => socket.send(data))
      socket.on("close", (closeCode) => resume(Effect.succeed(closeCode)))
      socket.on("error", () => undefined)
      return Effect.sync(() => socket.terminate())
    })
    expect(closed).toBe(code)
  })

transportSuite({
  name: "WebSocket",
  listen: (identity, options, extra) =>
    Effect.map(
      WebSocket.listen({
        host: "127.0.0.1",
        port: 0,
        identity,
        onConnection: CallProtocol.webSocketHandler(options),
        ...(extra?.drainTimeout === undefined ? {} : { drainTimeout: extra.drainTimeout })
      }),
      (listener) => ({ url: listener.url, fingerprint: Option.getOrThrow(listener.fingerprint) })
    ),
  garbage: [
    { name: "a text message", send: wsGarbage("hello", 1002) },
    { name: "an empty message", send: wsGarbage(Buffer.alloc(0), 1002) },
    { name: "a message of bad JSON", send: wsGarbage(Buffer.from("{nope"), 1002) },
    { name: "a message that is not an envelope", send: wsGarbage(Buffer.from('{"a":1}'), 1002) },
    { name: "a message over 64 MiB", send: wsGarbage(Buffer.alloc(64 * 1024 * 1024 + 1), 1009) }
  ]
})

describe("QUIC bursts", () => {
  // A stream per call: the QUIC library was seen to lose the FIN of the last 1–3 streams of a burst. A call is done
  // when its final envelope arrives, never when its stream's FIN does, so every call of every burst completes.
  it.live("64 concurrent calls, repeated 200 times, all complete", () =>
    Effect.gen(function*() {
      const echo = Operation.query({ name: "b/echo", input: Schema.Number, output: Schema.Number, handler: Effect.succeed })
      const registry = yield* OperationRegistry.make([echo])
      const endpoint = yield* Quic.makeEndpoint({
        host: "127.0.0.1",
        port: 0,
        identity: Tls.RawKey(new Uint8Array(32).fill(9)),
        handlers: { [CallProtocol.ALPN]: CallProtocol.handler({ source: registry.source }) }
      })
      const client = yield* CallClient.connect(`quic://127.0.0.1:${endpoint.address.port}`, {
        expectedFingerprint: endpoint.fingerprint
      })
      let completed = 0
      for (let round = 0; round < 200; round++) {
        const results = yield* Effect.forEach(
          Array.from({ length: 64 }, (_, i) => round * 64 + i),
          (n) => client.call("b/echo", n),
          { concurrency: "unbounded" }
        )
        expect(results[63]).toBe(round * 64 + 63)
        completed += results.length
      }
      expect(completed).toBe(12_800)
      yield* Effect.repeat(client.stats, { until: (s) => s.pending === 0 && s.exchanges === 0 })
    }).pipe(Effect.scoped), { timeout: 600_000 })
})
