/**
 * The call transport over streams (`src/call/StreamTransport.ts`), seen from the wire: a caller's engine on one end, a
 * raw peer (no engine) on the other (in memory, or QUIC where a full stream window matters), reading exactly what the
 * caller's streams carry.
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Deferred, Effect, Fiber, Option, Stream } from "effect"
import * as Codec from "../../src/call/Codec.js"
import * as Connection from "../../src/call/Connection.js"
import * as InMemoryTransport from "../../src/call/InMemoryTransport.js"
import * as CallClient from "../../src/layers/Client.js"
import * as Quic from "../../src/layers/quic/Quic.js"
import * as CallProtocol from "../../src/services/CallProtocol.js"
import type { BidiStream } from "../../src/services/Endpoint.js"
import * as Tls from "../../src/services/Tls.js"

/** A caller (engine) on one end; the other end's raw streams, in the order the caller opened them. */
const callerAndRawPeer = (options: InMemoryTransport.Options = {}) =>
  Effect.gen(function*() {
    const [callee, caller] = yield* InMemoryTransport.makePair(options)
    const connection = yield* Connection.make(caller, {})
    const next: Effect.Effect<BidiStream, unknown> = callee.connection.acceptBidi
    return { connection, next }
  })

/** Everything the caller wrote on `stream` until it finished its side, as envelopes. */
const readToEnd = (stream: BidiStream) =>
  Effect.map(Stream.runCollect(stream.readable), (chunks) => new Codec.FrameDecoder().push(Buffer.concat(Chunk.toArray(chunks))))

describe("stream transport", () => {
  it.scoped("a query's request carries its stream's FIN: the stream is finished while the call still waits", () =>
    Effect.gen(function*() {
      const { connection, next } = yield* callerAndRawPeer()
      const call = yield* Effect.fork(connection.call("x/op", { a: 1 }))
      const stream = yield* next
      const sent = yield* readToEnd(stream)
      expect(sent).toEqual([
        { type: "call.requested", id: sent[0]!.id, payload: { operationId: "/x/op", input: { a: 1 } } }
      ])
      // the caller still waits for its answer on the same stream
      expect(call.unsafePoll()).toBeNull()
      yield* stream.write(Codec.encodeFrame({ type: "call.responded", id: sent[0]!.id, payload: { output: "done" } }))
      yield* stream.end
      expect(yield* Fiber.join(call)).toBe("done")
    }))

  it.scoped("a subscription's stream stays open after its request; stopping it sends call.aborted on that stream", () =>
    Effect.gen(function*() {
      const { connection, next } = yield* callerAndRawPeer()
      const stream = yield* Effect.forkScoped(Stream.runDrain(connection.subscribe("x/items", null)))
      const raw = yield* next
      const decoder = new Codec.FrameDecoder()
      const firstChunk = yield* raw.read
      const [requested] = decoder.push(Option.getOrThrow(firstChunk))
      expect(requested).toMatchObject({ type: "call.requested", payload: { operationId: "/x/items" } })
      yield* Fiber.interrupt(stream)
      // the abort follows the request on the same stream, then the caller finishes it
      expect(yield* readToEnd(raw)).toEqual([{ type: "call.aborted", id: requested!.id, payload: {} }])
    }))

  it.scoped("an abort after a query's request goes on a new stream, with the request's id", () =>
    Effect.gen(function*() {
      const { connection, next } = yield* callerAndRawPeer()
      const call = yield* Effect.fork(connection.call("x/op", null))
      const first = yield* next
      const [requested] = yield* readToEnd(first)
      yield* Fiber.interrupt(call)
      const second = yield* next
      expect(yield* readToEnd(second)).toEqual([{ type: "call.aborted", id: requested!.id, payload: {} }])
    }))

  it.scopedLive("an abort while the request is still being written (the peer's window is full) resets its stream", () =>
    Effect.gen(function*() {
      // Over QUIC, whose stream windows hold a writer back: 1 KiB per stream, and a callee that reads only when told.
      const accepted = yield* Deferred.make<BidiStream>()
      const endpoint = yield* Quic.makeEndpoint({
        identity: Tls.SelfSigned,
        handlers: {
          [CallProtocol.ALPN]: (connection) => Effect.ignore(Effect.flatMap(connection.acceptBidi, (s) => Deferred.succeed(accepted, s)))
        },
        tuning: { initialMaxStreamDataBidiRemote: 1024, maxStreamWindow: 1024 }
      })
      const client = yield* CallClient.connect(`quic://127.0.0.1:${endpoint.address.port}`, {
        expectedFingerprint: endpoint.fingerprint
      })
      const call = yield* Effect.fork(client.call("x/op", "y".repeat(64 * 1024)))
      const stream = yield* Deferred.await(accepted)
      yield* Fiber.interrupt(call)
      // the callee sees the stream reset, not a cut-off frame followed by an abort
      const read = yield* Effect.either(Effect.iterate(Option.some(new Uint8Array()) as Option.Option<Uint8Array>, {
        while: Option.isSome,
        body: () => stream.read
      }))
      expect(read._tag).toBe("Left")
      if (read._tag === "Left") expect(read.left.reason).toBe("Reset")
      yield* Effect.repeat(client.stats, { until: (stats) => stats.pending === 0 && stats.exchanges === 0 })
    }))
})
