/**
 * `npm run bench:engine` — the call engine over the in-memory transport, beside a bare envelope echo over the same
 * transport (no registry, no dispatch, no correlation) in the same process. Prints a table with the overhead ratio
 * (bare rate / engine rate; 1.00 = no overhead).
 *
 * - unary c=1:   sequential round trips (one exchange per call, as over QUIC)
 * - unary c=64:  64 concurrent callers on one connection
 * - stream:      one subscription of N small items `{i}`, counted by the consumer
 */
import { Chunk, Effect, Option, Stream } from "effect"
import * as Connection from "../src/call/Connection.js"
import * as InMemoryTransport from "../src/call/InMemoryTransport.js"
import type { EventEnvelope } from "../src/schema/Envelope.js"
import { Schema } from "effect"
import * as Operation from "../src/services/Operation.js"
import * as OperationRegistry from "../src/services/OperationRegistry.js"

const quick = process.argv.includes("--quick")
const UNARY = quick ? 2_000 : 20_000
const STREAM = quick ? 20_000 : 200_000
const input = { n: 1, s: "x".repeat(100) }

const Echo = Schema.Struct({ n: Schema.Number, s: Schema.String })
const echo = Operation.query({ name: "bench/echo", input: Echo, output: Echo, handler: Effect.succeed })
const ticker = Operation.subscription({
  name: "bench/ticker",
  input: Schema.Struct({ count: Schema.Int }),
  output: Schema.Struct({ i: Schema.Int }),
  handler: ({ count }) => Stream.map(Stream.range(0, count - 1), (i) => ({ i }))
})

/** The floor: the same transport and envelopes, answered by a loop with no engine. */
const bare = Effect.gen(function*() {
  const [clientSide, serverSide] = yield* InMemoryTransport.makePair()
  yield* serverSide.accept.pipe(
    Stream.runForEach((exchange) =>
      Effect.fork(
        exchange.receive.pipe(
          Stream.runForEach((env) => {
            if (env.payload.operationId === "/bench/ticker") {
              const count = (env.payload.input as { count: number }).count
              return Effect.zipRight(
                Effect.forEach(
                  Array.from({ length: count }, (_, i) => i),
                  (i) => exchange.send({ type: "call.responded", id: env.id, payload: { output: { i } } }),
                  { discard: true }
                ),
                exchange.send({ type: "call.completed", id: env.id, payload: {} })
              )
            }
            return exchange.send({ type: "call.responded", id: env.id, payload: { output: env.payload.input } })
          }),
          Effect.ignore,
          Effect.ensuring(Effect.zipRight(exchange.end, exchange.close))
        )
      )
    ),
    Effect.forkScoped
  )
  const roundTrip = (operationId: string, payloadInput: unknown, untilType: string) =>
    Effect.acquireUseRelease(
      Effect.orDie(clientSide.open),
      (exchange) =>
        Effect.zipRight(
          Effect.orDie(exchange.send({ type: "call.requested", id: crypto.randomUUID(), payload: { operationId, input: payloadInput } })),
          exchange.receive.pipe(
            Stream.takeUntil((env: EventEnvelope) => env.type === untilType),
            Stream.runCount,
            Effect.orDie
          )
        ),
      (exchange) => Effect.zipRight(exchange.end, exchange.close)
    )
  return {
    unary: roundTrip("/bench/echo", input, "call.responded"),
    stream: (count: number) => Effect.map(roundTrip("/bench/ticker", { count }, "call.completed"), (n) => n - 1)
  }
})

const engine = Effect.gen(function*() {
  const registry = yield* Effect.orDie(OperationRegistry.make([echo, ticker]))
  const [clientSide, serverSide] = yield* InMemoryTransport.makePair()
  yield* Connection.make(serverSide, { source: registry.source })
  const client = yield* Connection.make(clientSide)
  return {
    unary: Effect.orDie(client.call("bench/echo", input)),
    stream: (count: number) => Effect.orDie(Stream.runCount(client.subscribe("bench/ticker", { count })))
  }
})

interface Subject {
  readonly unary: Effect.Effect<unknown>
  readonly stream: (count: number) => Effect.Effect<number>
}

const rate = (n: number, effect: Effect.Effect<unknown>) =>
  Effect.gen(function*() {
    const t0 = performance.now()
    yield* effect
    return n / ((performance.now() - t0) / 1000)
  })

const measure = (subject: Subject) =>
  Effect.gen(function*() {
    // warm-up
    yield* Effect.forEach(Array.from({ length: 500 }), () => subject.unary, { concurrency: 16, discard: true })
    yield* subject.stream(5_000)
    const c1 = yield* rate(UNARY / 4, Effect.forEach(Array.from({ length: UNARY / 4 }), () => subject.unary, { discard: true }))
    const c64 = yield* rate(UNARY, Effect.forEach(Array.from({ length: UNARY }), () => subject.unary, { concurrency: 64, discard: true }))
    const items = yield* rate(STREAM, Effect.flatMap(subject.stream(STREAM), (n) => n === STREAM ? Effect.void : Effect.dieMessage(`got ${n} items`)))
    return { c1, c64, items }
  })

const fmt = (n: number) => Math.round(n).toLocaleString("en-US")

const program = Effect.gen(function*() {
  const bareSubject = yield* bare
  const engineSubject = yield* engine
  // alternate to spread machine noise over both
  const b1 = yield* measure(bareSubject)
  const e1 = yield* measure(engineSubject)
  const b2 = yield* measure(bareSubject)
  const e2 = yield* measure(engineSubject)
  const best = (x: typeof b1, y: typeof b1) => ({ c1: Math.max(x.c1, y.c1), c64: Math.max(x.c64, y.c64), items: Math.max(x.items, y.items) })
  const b = best(b1, b2)
  const e = best(e1, e2)
  const rows: Array<[string, number, number]> = [
    ["unary round trips/s, c=1", b.c1, e.c1],
    ["unary round trips/s, c=64", b.c64, e.c64],
    ["subscription items/s", b.items, e.items]
  ]
  console.log(`\ncall engine over the in-memory transport (best of 2 runs${quick ? ", QUICK" : ""}; ${UNARY} calls, ${STREAM} items)\n`)
  console.log("| scenario | bare echo | engine | overhead (bare/engine) |")
  console.log("|---|---:|---:|---:|")
  for (const [name, bareRate, engineRate] of rows) {
    console.log(`| ${name} | ${fmt(bareRate)} | ${fmt(engineRate)} | ${(bareRate / engineRate).toFixed(2)}× |`)
  }
})

Effect.runPromise(Effect.scoped(program)).catch((e) => {
  console.error(e)
  process.exit(1)
})
void Chunk
void Option
