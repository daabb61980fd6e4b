/** A connection is symmetric, closes cleanly, and streams with bounded memory. */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Option, Ref, Schema, Stream } from "effect"
import * as Connection from "../../src/call/Connection.js"
import * as InMemoryTransport from "../../src/call/InMemoryTransport.js"
import * as Operation from "../../src/services/Operation.js"
import { acceptRaw, makePair, openRaw } from "./harness.js"

const double = Operation.query({
  name: "svc/double",
  input: Schema.Struct({ n: Schema.Number }),
  output: Schema.Number,
  handler: ({ n }) => Effect.succeed(n * 2)
})
const increment = Operation.query({
  name: "cli/inc",
  input: Schema.Struct({ n: Schema.Number }),
  output: Schema.Number,
  handler: ({ n }) => Effect.succeed(n + 1)
})

describe("connection", () => {
  it.scoped("calls in both directions run concurrently on one connection, including a call back from inside a handler", () =>
    Effect.gen(function*() {
      const serverSide = yield* Deferred.make<Connection.Connection>()
      // a server handler that calls the client back over the same connection while it runs
      const viaCallback = Operation.query({
        name: "svc/viaCallback",
        input: Schema.Struct({ n: Schema.Number }),
        output: Schema.Number,
        handler: ({ n }) =>
          Effect.flatMap(Deferred.await(serverSide), (server) =>
            Effect.map(
              Effect.orDie(server.call("cli/inc", { n })),
              (result) => (result as number) * 10
            ))
      })
      const { client, expectIdle, server } = yield* makePair([double, viaCallback], {
        clientRegistrations: [increment],
        transport: { chunkBytes: 16 } // deliver bytes in small chunks: the decoder reassembles frames
      })
      yield* Deferred.succeed(serverSide, server)
      const n = Array.from({ length: 40 }, (_, i) => i)
      const [fromClient, fromServer, callbacks] = yield* Effect.all([
        Effect.forEach(n, (i) => client.call("svc/double", { n: i }), { concurrency: "unbounded" }),
        Effect.forEach(n, (i) => server.call("/cli/inc", { n: i }), { concurrency: "unbounded" }),
        Effect.forEach(n, (i) => client.call("svc/viaCallback", { n: i }), { concurrency: 16 })
      ], { concurrency: "unbounded" })
      expect(fromClient).toEqual(n.map((i) => i * 2))
      expect(fromServer).toEqual(n.map((i) => i + 1))
      expect(callbacks).toEqual(n.map((i) => (i + 1) * 10))
      yield* expectIdle
    }))

  it.scoped("closing a connection interrupts its in-flight calls and fails the peer's pending calls with \"connection closed\"", () =>
    Effect.gen(function*() {
      const interrupted = yield* Ref.make(0)
      const started = yield* Ref.make(0)
      const hang = Operation.query({
        name: "svc/hang",
        input: Schema.Unknown,
        output: Schema.Null,
        handler: () =>
          Effect.zipRight(Ref.update(started, (n) => n + 1), Effect.never).pipe(
            Effect.onInterrupt(() => Ref.update(interrupted, (n) => n + 1))
          )
      })
      const { client, expectIdle, server } = yield* makePair([hang])
      const calls = yield* Effect.fork(
        Effect.all(Array.from({ length: 5 }, () => Effect.exit(client.call("svc/hang", null))), {
          concurrency: "unbounded"
        })
      )
      const subscription = yield* Effect.fork(Effect.exit(Stream.runDrain(client.subscribe("svc/hang", null))))
      yield* Effect.repeat(Ref.get(started), { until: (n) => n === 6 })
      yield* server.close
      const exits = yield* Fiber.join(calls)
      for (const exit of exits) {
        expect(exit).toEqual(Exit.fail(expect.objectContaining({ code: "INTERNAL", message: "connection closed" })))
      }
      const subscribed = yield* Fiber.join(subscription)
      expect(Exit.isFailure(subscribed)).toBe(true)
      expect(yield* Ref.get(interrupted)).toBe(6)
      expect(client.isClosed()).toBe(true)
      expect((yield* Effect.flip(client.call("svc/hang", null))).message).toBe("connection closed")
      expect((yield* Effect.flip(server.call("cli/anything", null))).message).toBe("connection closed")
      yield* expectIdle
    }))

  it.scoped("closing the transport under a connection fails pending calls on both sides", () =>
    Effect.gen(function*() {
      const { client, expectIdle, server, transports } = yield* makePair([
        Operation.query({ name: "svc/never", input: Schema.Unknown, output: Schema.Null, handler: () => Effect.never })
      ])
      const pendingCall = yield* Effect.fork(client.call("svc/never", null))
      yield* Effect.repeat(server.stats, { until: (s) => s.handlers === 1 })
      yield* transports[0].close
      expect((yield* Effect.flip(Fiber.join(pendingCall))).message).toBe("connection closed")
      yield* server.closed
      yield* client.closed
      yield* expectIdle
    }))

  it.scoped("a slow subscription consumer: items are never dropped and the producer stays bounded", () =>
    Effect.gen(function*() {
      const produced = yield* Ref.make(0)
      const total = 2_000
      const payload = "x".repeat(1_000)
      const firehose = Operation.subscription({
        name: "svc/firehose",
        input: Schema.Unknown,
        output: Schema.Struct({ i: Schema.Number, payload: Schema.String }),
        handler: () =>
          Stream.repeatEffect(Ref.getAndUpdate(produced, (n) => n + 1)).pipe(
            Stream.take(total),
            Stream.map((i) => ({ i, payload }))
          )
      })
      // 16 KiB per exchange direction (~16 items of 1 KB) and 4 buffered reads on the consumer side: what is in
      // flight is bounded by the pipe, the buffer (4 reads of at most a pipe each) and the read being routed
      const bufferBytes = 16 * 1024
      const subscriptionBuffer = 4
      const itemsPerPipe = Math.ceil(bufferBytes / payload.length)
      const bound = (subscriptionBuffer + 2) * itemsPerPipe + 8
      const { client, expectIdle } = yield* makePair([firehose], {
        transport: { bufferBytes },
        client: { subscriptionBuffer }
      })
      const received: Array<number> = []
      let maxAhead = 0
      yield* client.subscribe("svc/firehose", null).pipe(
        Stream.rechunk(1),
        Stream.runForEach((item) =>
          Effect.gen(function*() {
            received.push((item as { i: number }).i)
            // a slow consumer: let the producer run as far as it can before taking the next item
            for (let k = 0; k < 50; k++) yield* Effect.yieldNow()
            maxAhead = Math.max(maxAhead, (yield* Ref.get(produced)) - received.length)
          })
        )
      )
      expect(received).toEqual(Array.from({ length: total }, (_, i) => i)) // complete and in order
      expect(maxAhead).toBeGreaterThan(itemsPerPipe) // the pipeline did fill up...
      expect(maxAhead).toBeLessThanOrEqual(bound) // ...and stayed bounded: 2 000 items were never buffered
      expect(bound).toBeLessThan(total / 10)
      yield* expectIdle
    }))

  it.scoped("closing under a subscription whose buffer is full does not wait for its consumer; the consumer then gets the failure", () =>
    Effect.gen(function*() {
      const endless = Operation.subscription({
        name: "svc/endless",
        input: Schema.Unknown,
        output: Schema.Number,
        handler: () => Stream.iterate(0, (n) => n + 1).pipe(Stream.rechunk(1))
      })
      const { client, expectIdle } = yield* makePair([endless], { client: { subscriptionBuffer: 1 } })
      const firstSeen = yield* Deferred.make<void>()
      const resume = yield* Deferred.make<void>()
      const consumer = yield* Effect.fork(
        client.subscribe("svc/endless", null).pipe(
          Stream.rechunk(1),
          Stream.runForEach((n) =>
            n === 0 ? Effect.zipRight(Deferred.succeed(firstSeen, undefined), Deferred.await(resume)) : Effect.void
          ),
          Effect.flip
        )
      )
      yield* Deferred.await(firstSeen)
      yield* client.close // returns although the consumer is not reading
      yield* Deferred.succeed(resume, undefined)
      const error = yield* Fiber.join(consumer)
      expect([error.code, error.message]).toEqual(["INTERNAL", "connection closed"])
      yield* expectIdle
    }))

  it.scoped("the in-memory pipe applies backpressure: a write waits until the peer reads", () =>
    Effect.gen(function*() {
      const [a, b] = yield* InMemoryTransport.makeConnectionPair({ bufferBytes: 1024 })
      const mine = yield* a.openBidi
      const theirs = yield* b.acceptBidi
      const big = new Uint8Array(600)
      yield* mine.write(big) // fits
      const blocked = yield* Effect.fork(mine.write(big)) // 2 × 600 bytes > 1 KiB: waits
      for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
      expect(blocked.unsafePoll()).toBeNull()
      expect(Option.getOrThrow(yield* theirs.read).length).toBe(600)
      yield* Fiber.join(blocked)
      yield* mine.end
      expect(Option.getOrThrow(yield* theirs.read).length).toBe(600)
      expect(Option.isNone(yield* theirs.read)).toBe(true) // end of stream
      yield* mine.reset
      yield* theirs.end
      expect(a.liveStreams() + b.liveStreams()).toBe(0)
    }))

  it.scoped("a closed in-memory connection refuses to open and fails every stream", () =>
    Effect.gen(function*() {
      const [a, b] = yield* InMemoryTransport.makeConnectionPair()
      const mine = yield* a.openBidi
      yield* b.close()
      expect((yield* Effect.flip(a.openBidi)).reason).toBe("Closed")
      expect((yield* Effect.flip(mine.write(new Uint8Array(1)))).reason).toBe("Closed")
      expect((yield* Effect.flip(mine.read)).reason).toBe("Closed")
      expect((yield* Effect.flip(a.acceptBidi)).reason).toBe("Closed")
    }))
})

describe("connection against a raw peer", () => {
  it.scoped("a call completes on its answer even if the peer never finishes the stream (a lost FIN)", () =>
    Effect.gen(function*() {
      const [mine, theirs] = yield* InMemoryTransport.makePair()
      const client = yield* Connection.make(mine)
      // a peer that answers and keeps the exchange open
      yield* acceptRaw(theirs).pipe(
        Stream.runForEach((exchange) =>
          Effect.fork(
            Stream.runForEach(exchange.receive, (env) =>
              env.type === "call.requested"
                ? exchange.send({ type: "call.responded", id: env.id, payload: { output: "answer" } })
                : Effect.void)
          )
        ),
        Effect.forkScoped
      )
      expect(yield* client.call("any/op", null)).toBe("answer")
      expect(yield* client.stats).toMatchObject({ pending: 0 })
    }))

  it.scoped("an answer that arrives on another stream is correlated by id and ends the call", () =>
    Effect.gen(function*() {
      const [mine, theirs] = yield* InMemoryTransport.makePair()
      const client = yield* Connection.make(mine)
      // a peer that answers every request on a new exchange of its own, and never touches the request's exchange
      yield* acceptRaw(theirs).pipe(
        Stream.runForEach((exchange) =>
          Effect.fork(
            Stream.runForEach(exchange.receive, (env) =>
              env.type === "call.requested"
                ? Effect.flatMap(Effect.orDie(openRaw(theirs)), (other) =>
                  Effect.zipRight(
                    other.send({ type: "call.responded", id: env.id, payload: { output: "elsewhere" } }),
                    other.end
                  ))
                : Effect.void)
          )
        ),
        Effect.forkScoped
      )
      expect(yield* client.call("any/op", null)).toBe("elsewhere")
      expect(yield* client.stats).toMatchObject({ pending: 0 })
    }))
})
