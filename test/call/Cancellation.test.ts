/** SPEC §8: abort cascades (both policies), call.aborted on any exchange, deadlines with TestClock, subscriptions. */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Option, Ref, Schema, Stream, TestClock } from "effect"
import * as Operation from "../../src/services/Operation.js"
import { makePair, openRaw, request } from "./harness.js"

/** An event log shared by the handlers of a scenario. */
const makeLog = Effect.map(Ref.make<Array<string>>([]), (ref) => ({
  add: (event: string) => Ref.update(ref, (events) => [...events, event]),
  events: Ref.get(ref),
  /** Wait (yielding the scheduler) until `predicate` holds. */
  until: (predicate: (events: ReadonlyArray<string>) => boolean) =>
    Effect.gen(function*() {
      for (let i = 0; i < 10_000; i++) {
        if (predicate(yield* Ref.get(ref))) return
        yield* Effect.yieldNow()
      }
      throw new Error(`condition not reached; events: ${(yield* Ref.get(ref)).join(", ")}`)
    })
}))
type Log = Effect.Effect.Success<typeof makeLog>

const tree = ["r1", "a", "a1", "a2", "b", "b1"]

/** A leaf that runs until interrupted. */
const leaf = (log: Log, name: string) =>
  Operation.query({
    name: `tree/${name}`,
    visibility: "internal",
    input: Schema.Unknown,
    output: Schema.Null,
    handler: () =>
      Effect.zipRight(log.add(`started:${name}`), Effect.never).pipe(
        Effect.onInterrupt(() => log.add(`interrupted:${name}`))
      )
  })

/** A node that starts its children concurrently and waits for them. */
const node = (log: Log, name: string, children: ReadonlyArray<string>, visibility: Operation.Visibility = "internal") =>
  Operation.query({
    name: `tree/${name}`,
    visibility,
    input: Schema.Unknown,
    output: Schema.Null,
    handler: (_, ctx) =>
      Effect.zipRight(
        log.add(`started:${name}`),
        Effect.as(Effect.all(children.map((c) => ctx.env.invoke(`tree/${c}`, null)), { concurrency: "unbounded" }), null)
      ).pipe(Effect.onInterrupt(() => log.add(`interrupted:${name}`)))
  }).with({ env: children.map((c) => `tree/${c}`) })

describe("abort cascade (SPEC §8)", () => {
  it.scoped("AbortDependents: aborting r1 of r1{a{a1,a2},b{b1}} interrupts all five descendants", () =>
    Effect.gen(function*() {
      const log = yield* makeLog
      const ops = [
        node(log, "r1", ["a", "b"], "external"),
        node(log, "a", ["a1", "a2"]),
        node(log, "b", ["b1"]),
        leaf(log, "a1"),
        leaf(log, "a2"),
        leaf(log, "b1")
      ]
      const { client, expectIdle, server } = yield* makePair(ops)
      const call = yield* Effect.fork(client.call("tree/r1", null))
      yield* log.until((events) => tree.every((n) => events.includes(`started:${n}`)))
      // interrupting the caller's fiber sends call.aborted for r1
      yield* Fiber.interrupt(call)
      yield* log.until((events) => tree.every((n) => events.includes(`interrupted:${n}`)))
      expect((yield* log.events).filter((e) => e.startsWith("interrupted:")).sort()).toEqual(
        tree.map((n) => `interrupted:${n}`).sort()
      )
      yield* server.stats.pipe(Effect.map((s) => expect(s.handlers).toBe(0)))
      yield* expectIdle
    }))

  it.scoped("ContinueRunning: a started child keeps running; its unstarted children and b's unstarted subtree are stopped", () =>
    Effect.gen(function*() {
      const log = yield* makeLog
      const gate = yield* Deferred.make<void>()
      const policies = yield* Ref.make<Record<string, string>>({})
      const r1 = Operation.query({
        name: "tree/r1",
        input: Schema.Unknown,
        output: Schema.Null,
        handler: (_, ctx) =>
          Effect.gen(function*() {
            yield* log.add("started:r1")
            // a runs first under ContinueRunning; b would start after it
            yield* ctx.env.invoke("tree/a", null, { abortPolicy: "ContinueRunning" })
            yield* ctx.env.invoke("tree/b", null)
            return null
          }).pipe(Effect.onInterrupt(() => log.add("interrupted:r1")))
      }).with({ env: ["tree/a", "tree/b"] })
      const a = Operation.query({
        name: "tree/a",
        visibility: "internal",
        input: Schema.Unknown,
        output: Schema.Null,
        handler: (_, ctx) =>
          Effect.gen(function*() {
            yield* log.add("started:a")
            yield* Ref.update(policies, (p) => ({ ...p, a: ctx.abortPolicy }))
            yield* Deferred.await(gate)
            // after the abort of r1, these never start
            for (const child of ["a1", "a2"]) {
              const exit = yield* Effect.either(ctx.env.invoke(`tree/${child}`, null))
              yield* log.add(`${child}:${exit._tag === "Left" ? exit.left.message : "ran"}`)
            }
            yield* log.add("finished:a")
            return null
          }).pipe(Effect.onInterrupt(() => log.add("interrupted:a")))
      }).with({ env: ["tree/a1", "tree/a2"] })
      const ops = [r1, a, node(log, "b", ["b1"]), leaf(log, "a1"), leaf(log, "a2"), leaf(log, "b1")]
      const { client, expectIdle, server } = yield* makePair(ops)
      const call = yield* Effect.fork(client.call("tree/r1", null))
      yield* log.until((events) => events.includes("started:a"))
      yield* Fiber.interrupt(call)
      yield* log.until((events) => events.includes("interrupted:r1"))
      // r1 is gone, a still runs (detached from r1's fiber)
      const stats = yield* Effect.repeat(server.stats, { until: (s) => s.requests === 0 })
      expect(stats.detached).toBe(1)
      yield* Deferred.succeed(gate, undefined)
      yield* log.until((events) => events.includes("finished:a"))
      const events = yield* log.events
      expect(events).toEqual([
        "started:r1",
        "started:a",
        "interrupted:r1",
        "a1:request aborted",
        "a2:request aborted",
        "finished:a"
      ])
      expect(yield* Ref.get(policies)).toEqual({ a: "ContinueRunning" })
      yield* expectIdle
    }))

  it.scoped("ContinueRunning is inherited by grandchildren unless overridden", () =>
    Effect.gen(function*() {
      const seen = yield* Ref.make<Array<string>>([])
      const probe = (name: string, children: ReadonlyArray<[string, Operation.InvokeOptions | undefined]>) =>
        Operation.query({
          name: `p/${name}`,
          input: Schema.Unknown,
          output: Schema.Null,
          handler: (_, ctx) =>
            Effect.zipRight(
              Ref.update(seen, (s) => [...s, `${name}:${ctx.abortPolicy}`]),
              Effect.as(Effect.forEach(children, ([c, o]) => ctx.env.invoke(`p/${c}`, null, o)), null)
            )
        }).with({ env: children.map(([c]) => `p/${c}`) })
      const ops = [
        probe("root", [["child", { abortPolicy: "ContinueRunning" }], ["sibling", undefined]]),
        probe("child", [["grandchild", undefined], ["overridden", { abortPolicy: "AbortDependents" }]]),
        probe("grandchild", []),
        probe("overridden", []),
        probe("sibling", [])
      ]
      const { client, expectIdle } = yield* makePair(ops)
      yield* client.call("p/root", null)
      expect(yield* Ref.get(seen)).toEqual([
        "root:AbortDependents",
        "child:ContinueRunning",
        "grandchild:ContinueRunning",
        "overridden:AbortDependents",
        "sibling:AbortDependents"
      ])
      yield* expectIdle
    }))

  it.scoped("call.aborted interrupts the request wherever it arrives (here on a new stream)", () =>
    Effect.gen(function*() {
      const log = yield* makeLog
      const { expectIdle, transports } = yield* makePair([leaf(log, "x").with({}), node(log, "top", ["x"], "external")])
      const first = yield* openRaw(transports[1])
      yield* first.send(request("req-1", { operationId: "/tree/top" }))
      yield* log.until((events) => events.includes("started:x"))
      const second = yield* openRaw(transports[1])
      yield* second.send({ type: "call.aborted", id: "req-1", payload: {} })
      yield* second.end
      yield* log.until((events) => events.includes("interrupted:x") && events.includes("interrupted:top"))
      // the callee ends the request's exchange without an answer
      const answers = yield* Stream.runCollect(first.receive)
      expect(answers.length).toBe(0)
      yield* first.close
      yield* second.close
      yield* expectIdle
    }))
})

describe("deadlines (SPEC §8)", () => {
  it.scoped("children share the root's deadline: TIMEOUT at 30 s from the root, and the child is interrupted", () =>
    Effect.gen(function*() {
      const log = yield* makeLog
      const child = Operation.query({
        name: "d/child",
        visibility: "internal",
        input: Schema.Unknown,
        output: Schema.Null,
        handler: (_, ctx) =>
          Effect.zipRight(log.add(`child-deadline:${Option.getOrNull(ctx.deadline)}`), Effect.never).pipe(
            Effect.onInterrupt(() => log.add("interrupted:child"))
          )
      })
      const parent = Operation.query({
        name: "d/parent",
        input: Schema.Unknown,
        output: Schema.Null,
        handler: (_, ctx) =>
          Effect.zipRight(
            Effect.zipRight(log.add(`parent-deadline:${Option.getOrNull(ctx.deadline)}`), Effect.sleep("20 seconds")),
            Effect.as(ctx.env.invoke("d/child", null), null)
          )
      }).with({ env: ["d/child"] })
      const { client, expectIdle } = yield* makePair([child, parent])
      const call = yield* Effect.fork(client.call("d/parent", null))
      yield* log.until((events) => events.length === 1)
      yield* TestClock.adjust("20 seconds")
      yield* log.until((events) => events.length === 2)
      // the child got the parent's deadline (30 000), not a fresh 20 000 + 30 000
      expect(yield* log.events).toEqual(["parent-deadline:30000", "child-deadline:30000"])
      yield* TestClock.adjust("9 seconds")
      expect(call.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 second")
      const error = yield* Effect.flip(Fiber.join(call))
      expect([error.code, error.retryable]).toEqual(["TIMEOUT", true])
      yield* log.until((events) => events.includes("interrupted:child"))
      yield* expectIdle
    }))

  it.scoped("a ContinueRunning child still stops at the shared deadline", () =>
    Effect.gen(function*() {
      const log = yield* makeLog
      const child = Operation.query({
        name: "d/child",
        visibility: "internal",
        input: Schema.Unknown,
        output: Schema.Null,
        handler: () => Effect.never.pipe(Effect.onInterrupt(() => log.add("interrupted:child")))
      })
      const parent = Operation.query({
        name: "d/parent",
        input: Schema.Unknown,
        output: Schema.Null,
        handler: (_, ctx) => Effect.as(ctx.env.invoke("d/child", null, { abortPolicy: "ContinueRunning" }), null)
      }).with({ env: ["d/child"] })
      const { client, expectIdle, server } = yield* makePair([child, parent])
      const call = yield* Effect.fork(client.call("d/parent", null))
      yield* Effect.repeat(server.stats, { until: (s) => s.detached === 1 })
      yield* TestClock.adjust("30 seconds")
      expect((yield* Effect.flip(Fiber.join(call))).code).toBe("TIMEOUT")
      yield* log.until((events) => events.includes("interrupted:child"))
      yield* expectIdle
    }))

  it.scoped("subscriptions have no deadline by default; a caller timeout bounds them", () =>
    Effect.gen(function*() {
      const slowTicks = Operation.subscription({
        name: "d/ticks",
        input: Schema.Unknown,
        output: Schema.Number,
        handler: (_, ctx) =>
          Stream.concat(
            Stream.make(Option.isNone(ctx.deadline) ? -1 : -2),
            Stream.fromEffect(Effect.as(Effect.sleep("1 minute"), 1))
          )
      })
      const { client, expectIdle } = yield* makePair([slowTicks])
      const all = yield* Effect.fork(Stream.runCollect(client.subscribe("d/ticks", null)))
      yield* Effect.repeat(client.stats, { until: (s) => s.pending === 1 })
      yield* TestClock.adjust("1 minute")
      expect([...(yield* Fiber.join(all))]).toEqual([-1, 1])
      const bounded = yield* Effect.fork(Stream.runCollect(client.subscribe("d/ticks", null, { timeout: "10 seconds" })))
      yield* Effect.repeat(client.stats, { until: (s) => s.pending === 1 })
      yield* TestClock.adjust("10 seconds")
      expect((yield* Effect.flip(Fiber.join(bounded))).code).toBe("TIMEOUT")
      yield* expectIdle
    }))

  it.scoped("a consumer that stops reading a subscription sends call.aborted: the producer is interrupted", () =>
    Effect.gen(function*() {
      const log = yield* makeLog
      const forever = Operation.subscription({
        name: "d/forever",
        input: Schema.Unknown,
        output: Schema.Number,
        handler: () =>
          Stream.iterate(0, (n) => n + 1).pipe(
            Stream.rechunk(1),
            Stream.ensuringWith((exit) => log.add(exit._tag === "Failure" ? "producer:interrupted" : "producer:done"))
          )
      })
      const { client, expectIdle } = yield* makePair([forever])
      const firstThree = yield* Stream.runCollect(Stream.take(client.subscribe("d/forever", null), 3))
      expect([...firstThree]).toEqual([0, 1, 2])
      yield* log.until((events) => events.includes("producer:interrupted"))
      yield* expectIdle
    }))
})
