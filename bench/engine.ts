/**
 * `npm run bench:engine` — the call engine over the in-memory transport, beside a bare envelope echo over the same
 * transport (no registry, no dispatch, no correlation) in the same process. Prints a table with the overhead ratio
 * (bare rate / engine rate; 1.00 = no overhead). Rates are per CPU-second of this process, which is steadier than
 * wall time on a shared machine.
 *
 * - unary c=1:   sequential round trips (one stream per call, as over QUIC), input `{"n":1,"s":"<100 bytes>"}`
 * - unary c=64:  64 concurrent callers on one connection
 * - stream:      one subscription of N small items `{i}`, counted by the consumer
 *
 * A third column runs the same engine with tracing on: every call a client and a server span, recorded by the
 * OpenTelemetry SDK (`@effect/opentelemetry` over a `BatchSpanProcessor`) into an exporter that only counts them, so
 * the column is the cost of making and processing spans, without serialization or network.
 *
 * `--quick` runs a tenth of it (a smoke test).
 */
import * as OtelTracer from "@effect/opentelemetry/Tracer"
import { BasicTracerProvider, BatchSpanProcessor, type SpanExporter } from "@opentelemetry/sdk-trace-base"
import { Effect, Option, Stream } from "effect"
import * as Codec from "../src/call/Codec.js"
import * as Connection from "../src/call/Connection.js"
import type { TransportError } from "../src/errors/TransportError.js"
import type { EventEnvelope } from "../src/schema/Envelope.js"
import type { BidiStream } from "../src/services/Endpoint.js"
import * as InMemoryTransport from "../src/call/InMemoryTransport.js"
import { Schema } from "effect"
import * as Operation from "../src/services/Operation.js"
import * as OperationRegistry from "../src/services/OperationRegistry.js"

const quick = process.argv.includes("--quick")
const UNARY = quick ? 1_000 : 4_000
const STREAM = quick ? 20_000 : 100_000
const ROUNDS = quick ? 3 : 7
const input = { n: 1, s: "x".repeat(100) }

const Echo = Schema.Struct({ n: Schema.Number, s: Schema.String })
const echo = Operation.query({ name: "bench/echo", input: Echo, output: Echo, handler: Effect.succeed })
const ticker = Operation.subscription({
  name: "bench/ticker",
  input: Schema.Struct({ count: Schema.Int }),
  output: Schema.Struct({ i: Schema.Int }),
  handler: ({ count }) => Stream.map(Stream.range(0, count - 1), (i) => ({ i }))
})

/** The floor: the same in-memory streams and frames, answered by a loop with no engine. */
const bare = Effect.gen(function*() {
  const [clientSide, serverSide] = yield* InMemoryTransport.makeConnectionPair()
  /** Read frames off a stream until `done` says stop; returns how many envelopes were read. */
  const readUntil = (stream: BidiStream, done: (env: EventEnvelope) => boolean) =>
    Effect.suspend(() => {
      const decoder = new Codec.FrameDecoder()
      let count = 0
      const loop: Effect.Effect<number, TransportError> = Effect.flatMap(stream.read, (chunk) => {
        if (Option.isNone(chunk)) return Effect.succeed(count)
        for (const env of decoder.push(chunk.value)) {
          count++
          if (done(env)) return Effect.succeed(count)
        }
        return loop
      })
      return loop
    })
  const serve = (stream: BidiStream) =>
    Effect.gen(function*() {
      let request: EventEnvelope | undefined
      yield* readUntil(stream, (env) => {
        request = env
        return true
      })
      const env = request!
      if (env.payload.operationId === "/bench/ticker") {
        const count = (env.payload.input as { count: number }).count
        const frames: Array<Uint8Array> = []
        for (let i = 0; i < count; i++) {
          frames.push(Codec.encodeFrame({ type: "call.responded", id: env.id, payload: { output: { i } } }))
          if (frames.length === 256) yield* stream.write(Buffer.concat(frames.splice(0)))
        }
        frames.push(Codec.encodeFrame({ type: "call.completed", id: env.id, payload: {} }))
        yield* stream.write(Buffer.concat(frames))
      } else {
        yield* stream.write(Codec.encodeFrame({ type: "call.responded", id: env.id, payload: { output: env.payload.input } }))
      }
    }).pipe(Effect.ignore, Effect.ensuring(Effect.zipRight(stream.end, stream.reset)))
  yield* Effect.forever(Effect.flatMap(serverSide.acceptBidi, (stream) => Effect.fork(serve(stream)))).pipe(
    Effect.ignore,
    Effect.forkScoped
  )
  const roundTrip = (operationId: string, payloadInput: unknown, untilType: string) =>
    Effect.acquireUseRelease(
      Effect.orDie(clientSide.openBidi),
      (stream) =>
        Effect.zipRight(
          Effect.orDie(stream.write(Codec.encodeFrame({
            type: "call.requested",
            id: crypto.randomUUID(),
            payload: { operationId, input: payloadInput }
          }))),
          Effect.orDie(readUntil(stream, (env) => env.type === untilType))
        ),
      (stream) => Effect.zipRight(stream.end, stream.reset)
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

/** Spans recorded by the OpenTelemetry SDK and dropped by an exporter that counts them. */
let exportedSpans = 0
const countingExporter: SpanExporter = {
  export: (spans, done) => {
    exportedSpans += spans.length
    done({ code: 0 })
  },
  shutdown: () => Promise.resolve()
}

/** The engine with tracing on: both connections and every call run with an OpenTelemetry tracer. */
const traced = Effect.gen(function*() {
  const provider = new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(countingExporter, { maxQueueSize: 65_536 })] })
  yield* Effect.addFinalizer(() => Effect.promise(() => provider.shutdown()))
  const tracer = yield* Effect.provideService(OtelTracer.make, OtelTracer.OtelTracer, provider.getTracer("bench"))
  const subject = yield* Effect.withTracer(engine, tracer)
  return {
    unary: Effect.withTracer(subject.unary, tracer),
    stream: (count: number) => Effect.withTracer(subject.stream(count), tracer)
  }
})

interface Subject {
  readonly unary: Effect.Effect<unknown>
  readonly stream: (count: number) => Effect.Effect<number>
}

/**
 * Seconds of CPU this process used (user + system). The machine is shared: wall time counts the time other
 * processes hold the cores, CPU time counts only the work done here, so rates are per CPU-second.
 */
const cpuSeconds = () => {
  const { system, user } = process.cpuUsage()
  return (user + system) / 1e6
}

/** Operations per CPU-second of `n` runs of `effect` (sequential, or `concurrency` at a time). */
const rate = (n: number, effect: Effect.Effect<unknown>, concurrency = 1) =>
  Effect.gen(function*() {
    const t0 = cpuSeconds()
    yield* Effect.forEach(Array.from({ length: n }), () => effect, { concurrency, discard: true })
    return n / (cpuSeconds() - t0)
  })

const streamRate = (subject: Subject, n: number) =>
  Effect.gen(function*() {
    const t0 = cpuSeconds()
    const got = yield* subject.stream(n)
    if (got !== n) return yield* Effect.dieMessage(`got ${got} of ${n} items`)
    return n / (cpuSeconds() - t0)
  })

const median = (xs: ReadonlyArray<number>) => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const fmt = (n: number) => Math.round(n).toLocaleString("en-US")

const program = Effect.gen(function*() {
  const subjects = { bare: yield* bare, engine: yield* engine, traced: yield* traced }
  for (const subject of Object.values(subjects)) {
    yield* rate(1_000, subject.unary, 16) // warm-up
    yield* subject.stream(10_000)
  }
  // Rounds alternate bare and engine so that machine noise falls on both; each row reports the medians.
  const phases = [
    { name: "unary round trips/s, c=1", run: (s: Subject) => rate(UNARY / 4, s.unary) },
    { name: "unary round trips/s, c=64", run: (s: Subject) => rate(UNARY, s.unary, 64) },
    { name: "subscription items/s", run: (s: Subject) => streamRate(s, STREAM) }
  ]
  const rows: Array<[string, number, number, number]> = []
  for (const phase of phases) {
    const bareRates: Array<number> = []
    const engineRates: Array<number> = []
    const tracedRates: Array<number> = []
    for (let round = 0; round < ROUNDS; round++) {
      bareRates.push(yield* phase.run(subjects.bare))
      engineRates.push(yield* phase.run(subjects.engine))
      tracedRates.push(yield* phase.run(subjects.traced))
    }
    rows.push([phase.name, median(bareRates), median(engineRates), median(tracedRates)])
  }
  console.log(
    `\ncall engine over the in-memory transport, per CPU-second of this process (median of ${ROUNDS} alternating ` +
      `rounds${quick ? ", QUICK" : ""}; ` +
      `${UNARY / 4} calls at c=1, ${UNARY} at c=64, ${STREAM} items per round)\n`
  )
  console.log("| scenario | bare echo | engine | overhead (bare/engine) | engine, tracing on | tracing on / off |")
  console.log("|---|---:|---:|---:|---:|---:|")
  for (const [name, bareRate, engineRate, tracedRate] of rows) {
    console.log(
      `| ${name} | ${fmt(bareRate)} | ${fmt(engineRate)} | ${(bareRate / engineRate).toFixed(2)}× | ${fmt(tracedRate)} | ` +
        `${(tracedRate / engineRate).toFixed(2)}× |`
    )
  }
  console.log(`\n(${fmt(exportedSpans)} spans exported so far with tracing on)`)
})

Effect.runPromise(Effect.scoped(program)).catch((e) => {
  console.error(e)
  process.exit(1)
})
