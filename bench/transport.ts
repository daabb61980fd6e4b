/**
 * `npm run bench:transport` — the call protocol over each real transport beside a raw echo over the same library
 * (no engine, same envelopes), plus TLS over TCP as the floor. One process, loopback, Ed25519 TLS 1.3 everywhere.
 *
 * Per transport: call round trip p50/p99 at concurrency 1, calls/s at concurrency 64 on one connection, connection
 * setup (connect + one call + close), subscription items/s, and MiB/s for one 10 MiB payload. `--quick` runs 1/5.
 */
import * as tls from "node:tls"
import { Effect, Option, Redacted, Schema, Stream } from "effect"
import type { Scope } from "effect"
import { WebSocket as RawWebSocket, WebSocketServer } from "ws"
import * as https from "node:https"
import * as Codec from "../src/call/Codec.js"
import type { EventEnvelope } from "../src/schema/Envelope.js"
import * as Quic from "../src/layers/quic/Quic.js"
import * as WebSocket from "../src/layers/ws/WebSocket.js"
import * as CallClient from "../src/layers/Client.js"
import * as CallProtocol from "../src/services/CallProtocol.js"
import type { BidiStream, Connection } from "../src/services/Endpoint.js"
import * as Operation from "../src/services/Operation.js"
import * as OperationRegistry from "../src/services/OperationRegistry.js"
import * as Tls from "../src/services/Tls.js"

const quick = process.argv.includes("--quick")
const scale = (n: number) => (quick ? Math.max(1, Math.floor(n / 5)) : n)
const INPUT = { n: 1, s: "x".repeat(100) }
const BULK = "y".repeat(10 * 1024 * 1024)

/** What every scenario's client offers. */
interface Client {
  readonly call: (input: unknown) => Effect.Effect<unknown, unknown>
  readonly stream: (count: number) => Effect.Effect<number, unknown>
}
interface Scenario {
  readonly name: string
  /** Start the server; returns how to open a client connection (scoped). */
  readonly start: Effect.Effect<Effect.Effect<Client, unknown, Scope.Scope>, unknown, Scope.Scope>
}

const identity = Tls.RawKey(new Uint8Array(32).fill(7))
const now = () => performance.now()
const log = (s: string) => Effect.sync(() => process.stderr.write(`${s}\n`))
const pct = (sorted: ReadonlyArray<number>, p: number) => sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!

// ---------------------------------------------------------------------------------------------------------------
// Raw envelopes (the same JSON the engine sends)

const requested = (id: string, input: unknown) => ({ type: "call.requested", id, payload: { operationId: "/bench/echo", input } })
const responded = (id: string, output: unknown) => ({ type: "call.responded", id, payload: { output } })
let nextId = 0
const newId = () => `${++nextId}`

/** Answer a raw request envelope the way the engine would (echo, or a ticker stream). */
const rawAnswers = (envelope: EventEnvelope): Array<EventEnvelope> => {
  const payload = envelope.payload as { operationId: string; input: { count?: number } }
  if (payload.operationId === "/bench/ticker") {
    const out: Array<EventEnvelope> = []
    for (let i = 0; i < (payload.input.count ?? 0); i++) out.push(responded(envelope.id, { i }))
    out.push({ type: "call.completed", id: envelope.id, payload: {} })
    return out
  }
  return [responded(envelope.id, payload.input)]
}

// ---------------------------------------------------------------------------------------------------------------
// alknet over QUIC and WebSocket

const echo = Operation.query({ name: "bench/echo", input: Schema.Unknown, output: Schema.Unknown, handler: Effect.succeed })
const ticker = Operation.subscription({
  name: "bench/ticker",
  input: Schema.Struct({ count: Schema.Int }),
  output: Schema.Struct({ i: Schema.Int }),
  handler: ({ count }) => Stream.map(Stream.range(0, count - 1), (i) => ({ i }))
})

const alknetClient = (url: string, fingerprint: string): Effect.Effect<Client, unknown, Scope.Scope> =>
  Effect.map(CallClient.connect(url, { expectedFingerprint: fingerprint }), (connection) => ({
    call: (input) => connection.call("bench/echo", input),
    stream: (count) => Stream.runCount(connection.subscribe("bench/ticker", { count }))
  }))

const alknet = (kind: "quic" | "wss"): Scenario => ({
  name: `alknet ${kind === "quic" ? "QUIC" : "WebSocket"}`,
  start: Effect.gen(function*() {
    const registry = yield* OperationRegistry.make([echo, ticker])
    const serve: CallProtocol.ServeOptions = { source: registry.source }
    if (kind === "quic") {
      const endpoint = yield* Quic.makeEndpoint({ identity, handlers: { [CallProtocol.ALPN]: CallProtocol.handler(serve) } })
      return alknetClient(`quic://127.0.0.1:${endpoint.address.port}`, endpoint.fingerprint)
    }
    const listener = yield* WebSocket.listen({ host: "127.0.0.1", port: 0, identity, onConnection: CallProtocol.webSocketHandler(serve) })
    return alknetClient(listener.url, Option.getOrThrow(listener.fingerprint))
  })
})

// ---------------------------------------------------------------------------------------------------------------
// Raw QUIC: the same library and one stream per request, framed envelopes, no engine

const readFrames = (stream: BidiStream, onEnvelope: (e: EventEnvelope) => boolean) =>
  Effect.gen(function*() {
    const decoder = new Codec.FrameDecoder()
    for (;;) {
      const chunk = yield* stream.read
      if (Option.isNone(chunk)) return
      for (const envelope of decoder.push(chunk.value)) if (!onEnvelope(envelope)) return
    }
  })

const rawQuicServer = (connection: Connection) =>
  Effect.forever(
    Effect.flatMap(connection.acceptBidi, (stream) =>
      Effect.forkScoped(
        Effect.gen(function*() {
          const answers: Array<EventEnvelope> = []
          yield* readFrames(stream, (e) => (answers.push(...rawAnswers(e)), false))
          // Coalesce like a careful raw server would: one write per answer batch.
          yield* stream.write(Buffer.concat(answers.map((a) => Codec.encodeFrame(a))))
          yield* stream.end
        }).pipe(Effect.ignore)
      ))
  ).pipe(Effect.ignore)

const rawQuic: Scenario = {
  name: "raw QUIC",
  start: Effect.gen(function*() {
    const endpoint = yield* Quic.makeEndpoint({ identity, handlers: { [CallProtocol.ALPN]: rawQuicServer } })
    return Effect.map(
      Quic.connect({ host: "127.0.0.1", port: endpoint.address.port }, { alpn: CallProtocol.ALPN, expectedFingerprint: endpoint.fingerprint }),
      (connection): Client => {
        const exchange = (envelope: EventEnvelope, onEnvelope: (e: EventEnvelope) => boolean) =>
          Effect.acquireUseRelease(
            connection.openBidi,
            (stream) => Effect.zipRight(stream.write(Codec.encodeFrame(envelope)), readFrames(stream, onEnvelope)),
            (stream) => stream.reset
          )
        return {
          call: (input) => {
            let output: unknown
            return Effect.map(exchange(requested(newId(), input), (e) => ((output = e.payload.output), false)), () => output)
          },
          stream: (count) => {
            let n = 0
            return Effect.map(
              exchange({ type: "call.requested", id: newId(), payload: { operationId: "/bench/ticker", input: { count } } }, (e) => e.type === "call.responded" ? (n++, true) : false),
              () => n
            )
          }
        }
      }
    )
  })
}

// ---------------------------------------------------------------------------------------------------------------
// Raw WebSocket (ws over TLS, one envelope per binary message) and raw TLS over TCP (framed): one socket,
// correlation by id

interface Correlated {
  readonly send: (bytes: Uint8Array) => void
  readonly waiters: Map<string, (e: EventEnvelope) => boolean>
}

const correlatedClient = (c: Correlated, encode: (e: EventEnvelope) => Uint8Array): Client => ({
  call: (input) =>
    Effect.async((resume) => {
      const id = newId()
      c.waiters.set(id, (e) => (resume(Effect.succeed(e.payload.output)), false))
      c.send(encode(requested(id, input)))
    }),
  stream: (count) =>
    Effect.async((resume) => {
      const id = newId()
      let n = 0
      c.waiters.set(id, (e) => {
        if (e.type === "call.responded") return (n++, true)
        resume(Effect.succeed(n))
        return false
      })
      c.send(encode({ type: "call.requested", id, payload: { operationId: "/bench/ticker", input: { count } } }))
    })
})

const dispatch = (waiters: Correlated["waiters"], e: EventEnvelope) => {
  const waiter = waiters.get(e.id)
  if (waiter !== undefined && !waiter(e)) waiters.delete(e.id)
}

const tlsCredentials = Tls.load(identity)

const rawWs: Scenario = {
  name: "raw WebSocket",
  start: Effect.gen(function*() {
    const credentials = yield* tlsCredentials
    const server = https.createServer({ cert: credentials.certificatePem, key: Redacted.value(credentials.privateKeyPem) })
    const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 })
    wss.on("connection", (socket) =>
      socket.on("message", (data: Buffer) => {
        for (const answer of rawAnswers(Codec.decodeEnvelope(data))) socket.send(Codec.encodeEnvelope(answer))
      }))
    const port = yield* listenOn(server)
    yield* Effect.addFinalizer(() => Effect.sync(() => (wss.close(), server.close())))
    return Effect.acquireRelease(
      Effect.async<Client>((resume) => {
        const socket = new RawWebSocket(`wss://127.0.0.1:${port}`, {
          ca: credentials.certificatePem,
          perMessageDeflate: false,
          maxPayload: 64 * 1024 * 1024,
          // The certificate is trusted as the CA; its name is not checked (Node wants undefined for "ok").
          checkServerIdentity: (() => undefined) as unknown as () => boolean
        })
        const c: Correlated = { send: (b) => socket.send(b), waiters: new Map() }
        socket.on("message", (data: Buffer) => dispatch(c.waiters, Codec.decodeEnvelope(data)))
        socket.on("open", () => resume(Effect.succeed(Object.assign(correlatedClient(c, (e) => Codec.encodeEnvelope(e)), { socket }))))
      }),
      (client) => Effect.sync(() => (client as unknown as { socket: RawWebSocket }).socket.terminate())
    )
  })
}

const rawTls: Scenario = {
  name: "raw TLS/TCP (floor)",
  start: Effect.gen(function*() {
    const credentials = yield* tlsCredentials
    const server = tls.createServer({ cert: credentials.certificatePem, key: Redacted.value(credentials.privateKeyPem), minVersion: "TLSv1.3" }, (socket) => {
      socket.setNoDelay(true)
      const decoder = new Codec.FrameDecoder()
      socket.on("data", (chunk: Buffer) => {
        const out: Array<Uint8Array> = []
        for (const e of decoder.push(chunk)) for (const a of rawAnswers(e)) out.push(Codec.encodeFrame(a))
        if (out.length > 0) socket.write(Buffer.concat(out))
      })
      socket.on("error", () => undefined)
    })
    const port = yield* listenOn(server)
    yield* Effect.addFinalizer(() => Effect.sync(() => server.close()))
    return Effect.acquireRelease(
      Effect.async<Client>((resume) => {
        const socket = tls.connect({ host: "127.0.0.1", port, ca: credentials.certificatePem, checkServerIdentity: () => undefined, minVersion: "TLSv1.3" })
        socket.setNoDelay(true)
        const c: Correlated = { send: (b) => socket.write(b), waiters: new Map() }
        const decoder = new Codec.FrameDecoder()
        socket.on("data", (chunk: Buffer) => {
          for (const e of decoder.push(chunk)) dispatch(c.waiters, e)
        })
        socket.on("secureConnect", () => resume(Effect.succeed(Object.assign(correlatedClient(c, (e) => Codec.encodeFrame(e)), { socket }))))
      }),
      (client) => Effect.sync(() => (client as unknown as { socket: tls.TLSSocket }).socket.destroy())
    )
  })
}

const listenOn = (server: { listen: (port: number, host: string, cb: () => void) => unknown; address: () => unknown }) =>
  Effect.async<number>((resume) => {
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed((server.address() as { port: number }).port)))
  })

// ---------------------------------------------------------------------------------------------------------------
// Phases

interface Row {
  readonly name: string
  readonly p50: number
  readonly p99: number
  readonly callsPerSec: number
  readonly setupMs: number
  readonly itemsPerSec: number
  readonly bulkMiBs: number
}

const measure = (scenario: Scenario, counts: { latency: number; throughput: number; items: number; setups: number }) =>
  Effect.scoped(Effect.gen(function*() {
    yield* log(`${scenario.name}: starting`)
    const open = yield* scenario.start
    const client = yield* open
    for (let i = 0; i < Math.min(200, counts.latency); i++) yield* client.call(INPUT)

    const samples: Array<number> = []
    for (let i = 0; i < counts.latency; i++) {
      const t = now()
      yield* client.call(INPUT)
      samples.push((now() - t) * 1000)
    }
    samples.sort((a, b) => a - b)
    yield* log(`${scenario.name}: latency done`)

    let t = now()
    yield* Effect.forEach(Array.from({ length: counts.throughput }), () => client.call(INPUT), { concurrency: 64, discard: true })
    const callsPerSec = counts.throughput / ((now() - t) / 1000)
    yield* log(`${scenario.name}: throughput done`)

    t = now()
    const items = yield* client.stream(counts.items)
    if (items !== counts.items) throw new Error(`${scenario.name}: stream delivered ${items} of ${counts.items}`)
    const itemsPerSec = items / ((now() - t) / 1000)
    yield* log(`${scenario.name}: stream done`)

    t = now()
    const out = yield* client.call(BULK)
    if (out !== BULK) throw new Error(`${scenario.name}: bulk payload came back different`)
    const bulkMiBs = 10 / ((now() - t) / 1000)
    yield* log(`${scenario.name}: bulk done`)

    t = now()
    for (let i = 0; i < counts.setups; i++) yield* Effect.scoped(Effect.flatMap(open, (c) => c.call(INPUT)))
    const setupMs = (now() - t) / counts.setups

    return { name: scenario.name, p50: pct(samples, 0.5), p99: pct(samples, 0.99), callsPerSec, setupMs, itemsPerSec, bulkMiBs } satisfies Row
  }))

const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })

const table = (title: string, baseline: Row, rows: ReadonlyArray<Row>) => {
  const lines = [
    `\n### ${title}\n`,
    "| scenario | p50 µs (c=1) | p99 µs | calls/s (c=64) | setup ms | items/s | 10 MiB MiB/s |",
    "|---|---|---|---|---|---|---|"
  ]
  for (const r of rows) {
    lines.push(`| ${r.name} | ${fmt(r.p50)} | ${fmt(r.p99)} | ${fmt(r.callsPerSec)} | ${fmt(r.setupMs, 1)} | ${fmt(r.itemsPerSec)} | ${fmt(r.bulkMiBs, 1)} |`)
  }
  for (const r of rows) {
    if (r === baseline) continue
    lines.push(
      `| ${r.name} ÷ ${baseline.name} | ${fmt(r.p50 / baseline.p50, 2)}× | ${fmt(r.p99 / baseline.p99, 2)}× | ${fmt(r.callsPerSec / baseline.callsPerSec, 2)}× | ${fmt(r.setupMs / baseline.setupMs, 2)}× | ${fmt(r.itemsPerSec / baseline.itemsPerSec, 2)}× | ${fmt(r.bulkMiBs / baseline.bulkMiBs, 2)}× |`
    )
  }
  return lines.join("\n")
}

const main = Effect.gen(function*() {
  const fast = { latency: scale(2000), throughput: scale(20_000), items: scale(50_000), setups: scale(20) }
  const slow = { latency: scale(500), throughput: scale(5_000), items: scale(10_000), setups: scale(10) }
  const floor = yield* measure(rawTls, fast)
  const rawWsRow = yield* measure(rawWs, fast)
  const wsRow = yield* measure(alknet("wss"), fast)
  const rawQuicRow = yield* measure(rawQuic, slow)
  const quicRow = yield* measure(alknet("quic"), slow)
  console.log(`# bench:transport${quick ? " (--quick: 1/5 of the counts)" : ""}`)
  console.log(table("WebSocket (wss, TLS 1.3)", rawWsRow, [rawWsRow, wsRow, floor]))
  console.log(table("QUIC (@matrixai/quic)", rawQuicRow, [rawQuicRow, quicRow, floor]))
  console.log("\nEngine overhead = alknet ÷ raw with the same library; the TLS/TCP row is the floor.")
})

Effect.runPromise(main).catch((e) => {
  console.error(e)
  process.exit(1)
})
