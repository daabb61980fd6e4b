// One measured run for bench/engine-ab.sh: N unary calls at concurrency 64 over the in-memory engine, from the built
// dist/ of the checkout ROOT (node bench/engine-calls.mjs ROOT N). Prints calls per CPU-second of this process.
const root = process.argv[2]
const n = Number(process.argv[3] ?? 20000)
const { Effect, Schema } = await import(`${root}/node_modules/effect/dist/esm/index.js`)
const Connection = await import(`${root}/dist/call/Connection.js`)
const InMemoryTransport = await import(`${root}/dist/call/InMemoryTransport.js`)
const Operation = await import(`${root}/dist/services/Operation.js`)
const OperationRegistry = await import(`${root}/dist/services/OperationRegistry.js`)

const Echo = Schema.Struct({ n: Schema.Number, s: Schema.String })
const echo = Operation.query({ name: "bench/echo", input: Echo, output: Echo, handler: Effect.succeed })
const input = { n: 1, s: "x".repeat(100) }

const program = Effect.gen(function*() {
  const registry = yield* Effect.orDie(OperationRegistry.make([echo]))
  const [clientSide, serverSide] = yield* InMemoryTransport.makePair()
  yield* Connection.make(serverSide, { source: registry.source })
  const client = yield* Connection.make(clientSide)
  const call = Effect.orDie(client.call("bench/echo", input))
  yield* Effect.forEach(Array.from({ length: 2000 }), () => call, { concurrency: 64, discard: true }) // warm-up
  const t0 = process.cpuUsage()
  yield* Effect.forEach(Array.from({ length: n }), () => call, { concurrency: 64, discard: true })
  const t = process.cpuUsage(t0)
  console.log(`${Math.round(n / ((t.user + t.system) / 1e6))} calls/cpu-s`)
})
await Effect.runPromise(Effect.scoped(program))
