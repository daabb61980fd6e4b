/**
 * Ctrl-C on `alknet subscribe` sends `call.aborted` for the subscription (SPEC §8: a client that stops consuming a
 * subscription aborts it). The server here is a bare `alknet/call` handler on a real QUIC endpoint that streams items
 * and records every envelope it reads, so the test sees the abort itself, not just its effect. It answers
 * `services/schema` (which `alknet subscribe` asks first) with a subscription's spec.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Schedule, Stream } from "effect"
import * as Codec from "../../src/call/Codec.js"
import * as Quic from "../../src/layers/quic/Quic.js"
import type { EventEnvelope } from "../../src/schema/Envelope.js"
import { ALPN } from "../../src/services/CallProtocol.js"
import type { BidiStream, Connection } from "../../src/services/Endpoint.js"
import * as Tls from "../../src/services/Tls.js"
import * as Cli from "./cli.js"

const seed = new Uint8Array(32).fill(7)

describe("alknet subscribe", () => {
  it.live("Ctrl-C sends call.aborted for the subscription, then exits 130", () =>
    Effect.gen(function*() {
      const requested = yield* Deferred.make<EventEnvelope>()
      const aborted = yield* Deferred.make<EventEnvelope>()

      /** Answer a call.requested with an item every 50 ms; record what arrives on the stream. */
      const serveStream = (stream: BidiStream) =>
        Effect.gen(function*() {
          let producer: Fiber.RuntimeFiber<unknown, unknown> | undefined
          const decoder = new Codec.FrameDecoder()
          const send = (envelope: EventEnvelope) => stream.write(Codec.encodeFrame(envelope))
          const envelopes = Stream.mapConcat(stream.readable, (chunk) => decoder.push(chunk))
          yield* Stream.runForEach(envelopes, (envelope) =>
            Effect.gen(function*() {
              if (envelope.type === "call.requested" && envelope.payload.operationId === "/services/schema") {
                // `alknet subscribe` first checks that the operation is a subscription.
                return yield* send({
                  type: "call.responded",
                  id: envelope.id,
                  payload: { output: { name: "test/ticks", op_type: "subscription" } }
                })
              }
              if (envelope.type === "call.requested") {
                yield* Deferred.succeed(requested, envelope)
                let n = 0
                producer = yield* Effect.fork(
                  Effect.suspend(() => send({ type: "call.responded", id: envelope.id, payload: { output: { n: n++ } } }))
                    .pipe(Effect.repeat(Schedule.spaced("50 millis")))
                )
              }
              if (envelope.type === "call.aborted") {
                yield* Deferred.succeed(aborted, envelope)
                if (producer !== undefined) yield* Fiber.interrupt(producer)
              }
            }))
        }).pipe(Effect.ignore)

      const handler = (connection: Connection) =>
        Effect.forever(Effect.flatMap(connection.acceptBidi, (stream) => Effect.forkScoped(serveStream(stream)))).pipe(
          Effect.ignore
        )

      const endpoint = yield* Quic.makeEndpoint({ identity: Tls.RawKey(seed), handlers: { [ALPN]: handler } })
      const address = `quic://127.0.0.1:${endpoint.address.port}`

      const sub = yield* Cli.spawnRunning(["subscribe", address, "test/ticks", `{"from":1}`, "--fingerprint", endpoint.fingerprint])
      yield* sub.waitFor("stdout", /\{"n":2\}\n/)
      const request = yield* Deferred.await(requested)
      expect(request.payload).toMatchObject({ operationId: "/test/ticks", input: { from: 1 } })

      yield* sub.signal("SIGINT")
      const abort = yield* Deferred.await(aborted).pipe(Effect.timeout("20 seconds"))
      expect(abort).toEqual({ type: "call.aborted", id: request.id, payload: {} })
      expect(yield* sub.exited).toBe(130)
      expect(sub.stdout()).toMatch(/^\{"n":0\}\n\{"n":1\}\n\{"n":2\}\n/)
    }).pipe(Effect.scoped), { timeout: 60_000 })
})
