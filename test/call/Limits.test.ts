/**
 * What a hostile or buggy peer cannot make the engine do: exceed its calls in flight, hold a call past the longest
 * deadline the node allows, keep an anonymous subscription forever, leave a duplicate id unanswered, or leak
 * anything over a long mixed run.
 */
import { describe, expect, it } from "@effect/vitest"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { Deferred, Effect, Fiber, Schedule, Schema, Stream, TestClock } from "effect"
import * as Connection from "../../src/call/Connection.js"
import * as InMemoryTransport from "../../src/call/InMemoryTransport.js"
import type { EventEnvelope } from "../../src/schema/Envelope.js"
import * as Operation from "../../src/services/Operation.js"
import * as OperationRegistry from "../../src/services/OperationRegistry.js"
import { acceptRaw, makePair, openRaw, request, who } from "./harness.js"

const forever = Operation.query({
  name: "t/forever",
  input: Schema.Unknown,
  output: Schema.Null,
  handler: () => Effect.never
})
const echo = Operation.query({
  name: "t/echo",
  input: Schema.Struct({ n: Schema.Number }),
  output: Schema.Struct({ n: Schema.Number }),
  handler: Effect.succeed
})
const endless = Operation.subscription({
  name: "t/endless",
  input: Schema.Unknown,
  output: Schema.Number,
  // one item per second of (test) clock
  handler: () => Stream.iterate(0, (n) => n + 1).pipe(Stream.schedule(Schedule.spaced("1 second")))
})

const ops = [forever, echo, endless]

v8.setFlagsFromString("--expose-gc")
const gc = vm.runInNewContext("gc") as () => void
const heapAfterGc = () => {
  gc()
  gc()
  return process.memoryUsage().heapUsed
}

const errorOf = (envelope: EventEnvelope) => envelope.payload as { code: string; message: string; retryable: boolean }

/** Read envelopes off a raw stream until `n` arrived. */
const take = (stream: { readonly receive: Stream.Stream<EventEnvelope, unknown> }, n: number) =>
  Effect.map(Stream.runCollect(Stream.take(stream.receive, n)), (chunk) => [...chunk])

describe("limits per connection", () => {
  it.scoped("past maxInFlight a request is answered OVERLOADED (retryable); the others are served", () =>
    Effect.gen(function*() {
      const { client, expectIdle, server } = yield* makePair(ops, { server: { maxInFlight: 4 } })
      const held = yield* Effect.forEach(
        Array.from({ length: 4 }, () => client.call("t/forever", null)),
        (call) => Effect.fork(call)
      )
      yield* Effect.repeat(server.stats, { until: (s) => s.handlers === 4 })
      const refused = yield* Effect.flip(client.call("t/echo", { n: 1 }))
      expect([refused.code, refused.retryable]).toEqual(["OVERLOADED", true])
      expect(refused.message).toContain("too many calls in flight on this connection (limit 4)")
      yield* Fiber.interruptAll(held)
      expect(yield* client.call("t/echo", { n: 2 })).toEqual({ n: 2 })
      yield* expectIdle
    }))

  it.scoped("the per-caller admission refuses with OVERLOADED and is released when the call ends", () =>
    Effect.gen(function*() {
      let inFlight = 0
      const admit = () => {
        if (inFlight >= 1) return undefined
        inFlight++
        return () => {
          inFlight--
        }
      }
      const { client, expectIdle } = yield* makePair(ops, { server: { admit } })
      const held = yield* Effect.fork(client.call("t/forever", null))
      yield* Effect.repeat(Effect.yieldNow(), { until: () => inFlight === 1 })
      expect((yield* Effect.flip(client.call("t/echo", { n: 1 }))).code).toBe("OVERLOADED")
      yield* Fiber.interrupt(held)
      yield* Effect.repeat(Effect.yieldNow(), { until: () => inFlight === 0 })
      expect(yield* client.call("t/echo", { n: 3 })).toEqual({ n: 3 })
      yield* expectIdle
    }))

  it.scoped("a duplicate id in flight is answered with INVALID_INPUT; the first call still completes", () =>
    Effect.gen(function*() {
      const { expectIdle, transports } = yield* makePair([...ops, Operation.query({
        name: "t/gate",
        input: Schema.Unknown,
        output: Schema.String,
        handler: () => Effect.as(Deferred.await(gate), "first")
      })])
      const gate = yield* Deferred.make<void>()
      const first = yield* openRaw(transports[1])
      yield* first.send(request("dup", { operationId: "/t/gate" }))
      yield* Effect.repeat(Effect.yieldNow(), { times: 20 })
      const second = yield* openRaw(transports[1])
      yield* second.send(request("dup", { operationId: "/t/echo", input: { n: 1 } }))
      const [answer] = yield* take(second, 1)
      expect(errorOf(answer!)).toEqual({
        code: "INVALID_INPUT",
        message: "duplicate request id: a call with id dup is already in flight",
        retryable: false
      })
      yield* Deferred.succeed(gate, undefined)
      const [result] = yield* take(first, 1)
      expect(result).toEqual({ type: "call.responded", id: "dup", payload: { output: "first" } })
      yield* Effect.all([first.end, second.end, first.close, second.close])
      yield* expectIdle
    }))

  it.scoped("timeout_ms is capped by maxTimeout: a one-hour request times out at the cap", () =>
    Effect.gen(function*() {
      const { expectIdle, transports } = yield* makePair(ops, { server: { maxTimeout: "2 seconds" } })
      const stream = yield* openRaw(transports[1])
      yield* stream.send(request("long", { operationId: "/t/forever", timeout_ms: 3_600_000 }))
      const answer = yield* Effect.fork(take(stream, 1))
      yield* TestClock.adjust("1999 millis")
      expect(answer.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 millis")
      const [timedOut] = yield* Fiber.join(answer)
      expect(errorOf(timedOut!)).toMatchObject({ code: "TIMEOUT", retryable: true })
      yield* Effect.all([stream.end, stream.close])
      yield* expectIdle
    }))

  it.scoped("an anonymous subscription ends with TIMEOUT at its limit; an authenticated one runs on", () =>
    Effect.gen(function*() {
      const anonymous = yield* makePair(ops, { server: { anonymousSubscriptionTimeout: "5 seconds" } })
      const known = yield* makePair(ops, {
        server: { anonymousSubscriptionTimeout: "5 seconds", identity: who("alice") }
      })
      const a = yield* Effect.fork(Stream.runCollect(anonymous.client.subscribe("t/endless", null)))
      const b = yield* Effect.fork(Stream.runCollect(Stream.take(known.client.subscribe("t/endless", null), 10)))
      yield* TestClock.adjust("5 seconds")
      const error = yield* Effect.flip(Fiber.join(a))
      expect([error.code, error.message]).toEqual(["TIMEOUT", "request timed out"])
      yield* TestClock.adjust("10 seconds")
      expect([...(yield* Fiber.join(b))]).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
      yield* anonymous.expectIdle
      yield* known.expectIdle
    }))
})

describe("a hostile callee", () => {
  it.scoped("an output nested past the depth limit fails the call with INTERNAL, typed, without recursion", () =>
    Effect.gen(function*() {
      const [mine, theirs] = yield* InMemoryTransport.makePair()
      const client = yield* Connection.make(mine)
      // written by hand: JSON.stringify itself overflows on such a value
      const deep = "[".repeat(100_000) + "1" + "]".repeat(100_000)
      const frame = (id: string) => {
        const body = Buffer.from(`{"type":"call.responded","id":${JSON.stringify(id)},"payload":{"output":${deep}}}`)
        const header = Buffer.alloc(4)
        header.writeUInt32BE(body.length, 0)
        return Buffer.concat([header, body])
      }
      yield* acceptRaw(theirs).pipe(
        Stream.runForEach((stream) =>
          Effect.fork(Stream.runForEach(stream.receive, (env) =>
            env.type === "call.requested"
              ? stream.sendBytes(frame(env.id))
              : Effect.void))
        ),
        Effect.forkScoped
      )
      const error = yield* Effect.flip(client.call("any/op", null))
      expect([error.code, error.message]).toEqual(["INTERNAL", "the output is nested deeper than 64 levels"])
      yield* Effect.repeat(client.stats, { until: (s) => s.pending === 0 && s.exchanges === 0 })
    }))
})

describe("nothing leaks", () => {
  it.live("100,000 mixed calls on one connection (ok, NOT_FOUND, INVALID_INPUT, aborted, timed out)", () =>
    Effect.scoped(
    Effect.gen(function*() {
      const { client, server } = yield* makePair(ops)
      const kinds = { ok: 0, NOT_FOUND: 0, INVALID_INPUT: 0, aborted: 0, TIMEOUT: 0 }
      const one = (i: number) => {
        switch (i % 5) {
          case 0:
            return Effect.map(client.call("t/echo", { n: i }), () => void kinds.ok++)
          case 1:
            return Effect.map(Effect.flip(client.call("t/nope", null)), (e) => void kinds[e.code as "NOT_FOUND"]++)
          case 2:
            return Effect.map(Effect.flip(client.call("t/echo", { n: "x" })), (e) => void kinds[e.code as "INVALID_INPUT"]++)
          case 3:
            return Effect.flatMap(Effect.fork(client.call("t/forever", null)), (fiber) =>
              Effect.zipRight(Effect.yieldNow(), Effect.map(Fiber.interrupt(fiber), () => void kinds.aborted++)))
          default:
            return Effect.map(
              Effect.flip(client.call("t/forever", null, { timeout: "1 millis" })),
              (e) => void kinds[e.code as "TIMEOUT"]++
            )
        }
      }
      const run = (from: number, count: number) =>
        Effect.forEach(Array.from({ length: count }, (_, i) => from + i), one, { concurrency: 64, discard: true })
      yield* run(0, 10_000) // warm up, then measure the heap around the rest
      const before = heapAfterGc()
      yield* run(10_000, 90_000)
      expect(kinds).toEqual({ ok: 20_000, NOT_FOUND: 20_000, INVALID_INPUT: 20_000, aborted: 20_000, TIMEOUT: 20_000 })
      // aborted and timed-out requests end on the server shortly after the caller gave up
      yield* Effect.repeat(server.stats, { until: (s) => s.requests === 0 && s.handlers === 0 }).pipe(
        Effect.zipRight(Effect.repeat(client.stats, { until: (s) => s.pending === 0 && s.exchanges === 0 }))
      )
      expect(yield* server.stats).toEqual({ requests: 0, pending: 0, exchanges: 0, handlers: 0, detached: 0 })
      // flat: a leak of even 300 bytes per call would show as 27 MB here
      expect(heapAfterGc() - before).toBeLessThan(16 * 1024 * 1024)
    })), { timeout: 300_000 })

  it.scoped("2,000 connections dropped mid-call leave nothing behind", () =>
    Effect.gen(function*() {
      const registry = yield* OperationRegistry.make(ops)
      for (let i = 0; i < 2_000; i++) {
        const [a, b] = yield* Effect.scoped(Effect.gen(function*() {
          const [serverSide, clientSide] = yield* InMemoryTransport.makePair()
          const server = yield* Connection.make(serverSide, { source: registry.source })
          const client = yield* Connection.make(clientSide)
          const calls = yield* Effect.fork(Effect.either(client.call("t/forever", null)))
          const sub = yield* Effect.fork(Effect.either(Stream.runDrain(client.subscribe("t/endless", null))))
          yield* Effect.repeat(server.stats, { until: (s) => s.handlers === 2 })
          // the connection drops under both calls
          yield* serverSide.connection.close()
          const results = yield* Effect.all([Fiber.join(calls), Fiber.join(sub)])
          for (const result of results) expect(result._tag).toBe("Left")
          yield* Effect.all([server.closed, client.closed])
          return [yield* server.stats, yield* client.stats] as const
        }))
        expect(a).toEqual({ requests: 0, pending: 0, exchanges: 0, handlers: 0, detached: 0 })
        expect(b).toEqual({ requests: 0, pending: 0, exchanges: 0, handlers: 0, detached: 0 })
      }
    }), 120_000)
})
