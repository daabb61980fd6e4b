/**
 * `npx tsx bench/quic-raw.ts [--quick] [--tuning]` — raw echo over the QUIC layer (no call engine), beside raw
 * echo over TLS-over-TCP (node:tls) with the same framing as the floor. Server and client run in this process.
 *
 * Frames are the call protocol's: 4-byte big-endian length + a small JSON envelope (~180 bytes). The server echoes
 * bytes as they arrive; the client splits the echo back into frames.
 *
 * - lat c=1:       sequential round trips on one stream (p50 / p99 µs)
 * - lat/stream:    sequential round trips, a new stream per request (QUIC only)
 * - req/s c=64:    64 concurrent requesters on one stream (FIFO echo), frames written as they come
 * - req/s coal.:   the same, with every frame queued in a tick coalesced into one write
 * - req/s str c64: 64 concurrent requesters, a new stream per request (QUIC only)
 * - setup ms:      connect (handshake done) until the connection is usable, average of N
 * - MiB/s:         a 10 MiB payload echoed on one stream, counted one way (10 MiB / round-trip time); capped at 20 s
 *
 * `--tuning` adds rows for other @matrixai/quic settings (UDP payload sizes, reader chunk size, windows).
 */
import { Deferred, Duration, Effect, Exit, Fiber, Option, Queue, Redacted, Scope } from "effect"
import { randomUUID } from "node:crypto"
import * as tls from "node:tls"
import * as Quic from "../src/layers/quic/Quic.js"
import type { BidiStream, Connection } from "../src/services/Endpoint.js"
import * as Tls from "../src/services/Tls.js"

const quick = process.argv.includes("--quick")
const withTuning = process.argv.includes("--tuning")
const N_LAT = quick ? 300 : 2_000
const N_LAT_STREAM = quick ? 100 : 500
const N_TPUT = quick ? 2_000 : 20_000
const N_TPUT_STREAM = quick ? 640 : 2_560
const N_SETUP = quick ? 5 : 20
const BULK = 10 * 1024 * 1024
const BULK_CAP_MS = 20_000

const frame = (() => {
  const body = Buffer.from(JSON.stringify({
    type: "call.requested",
    id: randomUUID(),
    payload: { operationId: "/bench/echo", input: { n: 1, s: "x".repeat(100) } }
  }))
  const out = Buffer.alloc(4 + body.length)
  out.writeUInt32BE(body.length, 0)
  body.copy(out, 4)
  return out
})()

/** Splits a byte stream into frames; returns how many complete frames a chunk finished. */
class FrameCounter {
  private pending = 0 // bytes still missing from the current frame (0 = at a header)
  private header = Buffer.alloc(4)
  private headerHave = 0
  push(chunk: Uint8Array): number {
    let frames = 0
    let i = 0
    while (i < chunk.length) {
      if (this.pending === 0) {
        const take = Math.min(4 - this.headerHave, chunk.length - i)
        Buffer.from(chunk.buffer, chunk.byteOffset + i, take).copy(this.header, this.headerHave)
        this.headerHave += take
        i += take
        if (this.headerHave === 4) {
          this.pending = this.header.readUInt32BE(0)
          this.headerHave = 0
        }
      } else {
        const take = Math.min(this.pending, chunk.length - i)
        this.pending -= take
        i += take
        if (this.pending === 0) frames++
      }
    }
    return frames
  }
}

const now = () => performance.now()
const progress = (what: string) => Effect.sync(() => process.stderr.write(`  ${what}\n`))
const PHASE_CAP = Duration.seconds(quick ? 60 : 120)
/** Run one measurement; a phase that has not finished by the cap (a stalled transport) reports NaN. */
const phase = <A extends number | Array<number>>(what: string, effect: Effect.Effect<A, unknown, Scope.Scope>) =>
  Effect.zipRight(
    progress(what),
    effect.pipe(
      Effect.timeout(PHASE_CAP),
      Effect.orElseSucceed(() => NaN),
      Effect.scoped
    )
  ) as Effect.Effect<A | number>
const sorted = (samples: Array<number> | number) => (Array.isArray(samples) ? samples : [])
const percentile = (sorted: Array<number>, p: number) => sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] ?? NaN

/** The minimal byte pipe both transports are measured through. */
interface Pipe {
  readonly write: (bytes: Uint8Array) => Effect.Effect<void, unknown>
  readonly read: Effect.Effect<Option.Option<Uint8Array>, unknown>
  readonly end: Effect.Effect<void>
}

/** One request at a time: write a frame, read until its echo is complete. */
const sequential = (pipe: Pipe, n: number) =>
  Effect.gen(function*() {
    const counter = new FrameCounter()
    const samples: Array<number> = []
    for (let i = 0; i < n; i++) {
      const t0 = now()
      yield* pipe.write(frame)
      let got = 0
      while (got === 0) got += counter.push(Option.getOrThrow(yield* pipe.read))
      samples.push((now() - t0) * 1000)
    }
    return samples.sort((a, b) => a - b)
  })

/** `concurrency` requesters on one pipe; replies are matched in FIFO order. */
const concurrent = (pipe: Pipe, n: number, concurrency: number, coalesce: boolean) =>
  Effect.gen(function*() {
    const queue = yield* Queue.unbounded<Deferred.Deferred<void>>()
    const inFlight: Array<Deferred.Deferred<void>> = []
    const writer = Effect.forever(
      Effect.gen(function*() {
        const batch = coalesce ? [...(yield* Queue.takeBetween(queue, 1, 1024))] : [yield* Queue.take(queue)]
        inFlight.push(...batch)
        yield* pipe.write(batch.length === 1 ? frame : Buffer.concat(batch.map(() => frame)))
      })
    )
    const counter = new FrameCounter()
    const reader = Effect.forever(
      Effect.gen(function*() {
        const frames = counter.push(Option.getOrThrow(yield* pipe.read))
        for (let i = 0; i < frames; i++) yield* Deferred.succeed(inFlight.shift()!, undefined)
      })
    )
    const fibers = [yield* Effect.fork(writer), yield* Effect.fork(reader)]
    const perWorker = Math.ceil(n / concurrency)
    const t0 = now()
    yield* Effect.forEach(
      Array.from({ length: concurrency }),
      () =>
        Effect.repeatN(
          Effect.flatMap(Deferred.make<void>(), (d) => Effect.zipRight(Queue.offer(queue, d), Deferred.await(d))),
          perWorker - 1
        ),
      { concurrency: "unbounded", discard: true }
    )
    const seconds = (now() - t0) / 1000
    yield* Fiber.interruptAll(fibers)
    return (perWorker * concurrency) / seconds
  })

/** Bulk: write `BULK` bytes in 64 KiB writes while reading the echo; MiB/s one way. */
const bulk = (pipe: Pipe) =>
  Effect.gen(function*() {
    const chunk = Buffer.alloc(64 * 1024, 7)
    const t0 = now()
    let received = 0
    const reader = Effect.gen(function*() {
      while (received < BULK) {
        const next = yield* pipe.read
        if (Option.isNone(next)) break
        received += next.value.length
      }
    })
    const writer = Effect.gen(function*() {
      for (let sent = 0; sent < BULK; sent += chunk.length) yield* pipe.write(chunk)
    })
    yield* Effect.all([reader, writer], { concurrency: 2 }).pipe(
      Effect.timeout(Duration.millis(BULK_CAP_MS)),
      Effect.ignore
    )
    const seconds = (now() - t0) / 1000
    return { mibs: received / (1024 * 1024) / seconds, capped: received < BULK }
  })

interface Row {
  readonly name: string
  readonly p50?: number
  readonly p99?: number
  readonly p50Stream?: number
  readonly rps?: number
  readonly rpsCoalesced?: number
  readonly rpsStreams?: number
  readonly setupMs?: number
  readonly mibs?: number
  readonly capped?: boolean
}

const mean = (xs: ReadonlyArray<number>) => (xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length)

/** Milliseconds for each of N_SETUP connects (the connection is closed after each, untimed). */
const timeSetups = <E>(connect: Effect.Effect<unknown, E, Scope.Scope>) =>
  Effect.gen(function*() {
    const setups: Array<number> = []
    for (let i = 0; i < N_SETUP; i++) {
      const scope = yield* Scope.make()
      const t0 = now()
      yield* Scope.extend(connect, scope)
      setups.push(now() - t0)
      yield* Scope.close(scope, Exit.void)
    }
    return setups
  })

const pipeOf = (stream: BidiStream): Pipe => ({ write: stream.write, read: stream.read, end: stream.end })

/** Byte echo on every stream the peer opens. */
const echoHandler = (connection: Connection) =>
  Effect.forever(
    Effect.flatMap(connection.acceptBidi, (stream) =>
      Effect.forkScoped(
        Effect.gen(function*() {
          while (true) {
            const chunk = yield* stream.read
            if (Option.isNone(chunk)) break
            yield* stream.write(chunk.value)
          }
          yield* stream.end
        }).pipe(Effect.catchAll(() => stream.reset))
      ))
  ).pipe(Effect.ignore)

const quicRow = (name: string, tuning: Partial<Quic.Tuning>) =>
  Effect.gen(function*() {
    const server = yield* Quic.makeEndpoint({ identity: Tls.SelfSigned, handlers: { "bench/raw": echoHandler }, tuning })
    const connect = Quic.connect(server.address, { alpn: "bench/raw", expectedFingerprint: server.fingerprint, tuning })
    const connection = yield* connect
    const open = Effect.map(connection.openBidi, pipeOf)

    const lat = sorted(yield* phase("latency", Effect.flatMap(open, (p) => sequential(p, N_LAT))))
    const latStream = sorted(
      yield* phase(
        "latency, stream per request",
        Effect.gen(function*() {
          const samples: Array<number> = []
          for (let i = 0; i < N_LAT_STREAM; i++) {
            const t0 = now()
            const stream = yield* connection.openBidi
            yield* stream.write(frame)
            yield* stream.end
            while (Option.isSome(yield* stream.read));
            samples.push((now() - t0) * 1000)
          }
          return samples.sort((a, b) => a - b)
        })
      )
    )
    const rps = yield* phase("throughput", Effect.flatMap(open, (p) => concurrent(p, N_TPUT, 64, false)))
    const rpsCoalesced = yield* phase("throughput, coalesced", Effect.flatMap(open, (p) => concurrent(p, N_TPUT, 64, true)))
    const rpsStreams = yield* phase(
      "throughput, stream per request",
      Effect.gen(function*() {
        const perWorker = Math.ceil(N_TPUT_STREAM / 64)
        const t0 = now()
        yield* Effect.forEach(Array.from({ length: 64 }), () =>
          Effect.repeatN(
            Effect.gen(function*() {
              const stream = yield* connection.openBidi
              yield* stream.write(frame)
              yield* stream.end
              while (Option.isSome(yield* stream.read));
            }),
            perWorker - 1
          ), { concurrency: "unbounded", discard: true })
        return (perWorker * 64) / ((now() - t0) / 1000)
      })
    )
    const setups = sorted(yield* phase("setup", timeSetups(connect)))
    yield* progress("bulk")
    const { capped, mibs } = yield* Effect.scoped(Effect.flatMap(open, bulk))
    return {
      name,
      p50: percentile(lat, 0.5),
      p99: percentile(lat, 0.99),
      p50Stream: percentile(latStream, 0.5),
      rps,
      rpsCoalesced,
      rpsStreams,
      setupMs: mean(setups),
      mibs,
      capped
    } satisfies Row
  }).pipe(Effect.scoped)

/** node:tls socket as a pipe: reads pull from a small queue fed by `data` events (paused while it is full). */
const tlsPipe = (socket: tls.TLSSocket): Effect.Effect<Pipe> =>
  Effect.gen(function*() {
    const chunks = yield* Queue.bounded<Option.Option<Uint8Array>>(64)
    socket.on("data", (chunk: Buffer) => {
      if (!Queue.unsafeOffer(chunks, Option.some(chunk))) {
        socket.pause()
        Effect.runFork(Effect.zipRight(Queue.offer(chunks, Option.some(chunk)), Effect.sync(() => socket.resume())))
      }
    })
    socket.on("end", () => Queue.unsafeOffer(chunks, Option.none()))
    return {
      write: (bytes) =>
        Effect.async<void, Error>((resume) => {
          socket.write(bytes, (e) => resume(e ? Effect.fail(e) : Effect.void))
        }),
      read: Queue.take(chunks),
      end: Effect.sync(() => socket.end())
    }
  })

const tlsRow = Effect.gen(function*() {
  const credentials = yield* Tls.load(Tls.SelfSigned)
  const server = yield* Effect.acquireRelease(
    Effect.async<tls.Server>((resume) => {
      const s = tls.createServer({
        key: Redacted.value(credentials.privateKeyPem),
        cert: credentials.certificatePem,
        minVersion: "TLSv1.3"
      }, (socket) => {
        socket.setNoDelay(true)
        socket.pipe(socket)
      })
      s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
    }),
    (s) => Effect.async<void>((resume) => void s.close(() => resume(Effect.void)))
  )
  const port = (server.address() as { port: number }).port
  const connect = Effect.acquireRelease(
    Effect.async<tls.TLSSocket, Error>((resume) => {
      const socket = tls.connect({
        host: "127.0.0.1",
        port,
        ca: credentials.certificatePem,
        checkServerIdentity: () => undefined,
        minVersion: "TLSv1.3"
      }, () => resume(Effect.succeed(socket)))
      socket.setNoDelay(true)
      socket.once("error", (e) => resume(Effect.fail(e)))
    }),
    (socket) => Effect.sync(() => socket.destroy())
  )
  const open = Effect.flatMap(connect, tlsPipe)
  const lat = sorted(yield* phase("tls latency", Effect.flatMap(open, (p) => sequential(p, N_LAT))))
  const rps = yield* phase("tls throughput", Effect.flatMap(open, (p) => concurrent(p, N_TPUT, 64, false)))
  const rpsCoalesced = yield* phase("tls throughput, coalesced", Effect.flatMap(open, (p) => concurrent(p, N_TPUT, 64, true)))
  const setups = sorted(yield* phase("tls setup", timeSetups(connect)))
  yield* progress("tls bulk")
  const { capped, mibs } = yield* Effect.scoped(Effect.flatMap(open, bulk))
  return {
    name: "TLS/TCP (node:tls) floor",
    p50: percentile(lat, 0.5),
    p99: percentile(lat, 0.99),
    rps,
    rpsCoalesced,
    setupMs: mean(setups),
    mibs,
    capped
  } satisfies Row
}).pipe(Effect.scoped)

const scenarios: Array<[string, Partial<Quic.Tuning>]> = [
  ["QUIC layer defaults", {}],
  ["QUIC library defaults", {
    maxSendUdpPayloadSize: 1350,
    readableChunkSize: 4096,
    initialMaxStreamsBidi: 100,
    udpBufferSize: 0
  }],
  ...(withTuning
    ? [
      ["OS default UDP socket buffers", { udpBufferSize: 0 }],
      ["udp send 1350", { maxSendUdpPayloadSize: 1350 }],
      ["udp send 8192", { maxSendUdpPayloadSize: 8192 }],
      ["udp send 16384", { maxSendUdpPayloadSize: 16384 }],
      ["reader chunk 4 KiB", { readableChunkSize: 4096 }],
      ["reader chunk 1 MiB", { readableChunkSize: 1024 * 1024 }],
      ["windows x4 (stream 4 MiB, conn 40 MiB)", {
        initialMaxStreamDataBidiLocal: 4 * 1024 * 1024,
        initialMaxStreamDataBidiRemote: 4 * 1024 * 1024,
        initialMaxData: 40 * 1024 * 1024
      }],
      ["windows /4 (stream 256 KiB, conn 2.5 MiB)", {
        initialMaxStreamDataBidiLocal: 256 * 1024,
        initialMaxStreamDataBidiRemote: 256 * 1024,
        initialMaxData: 2.5 * 1024 * 1024
      }]
    ] satisfies Array<[string, Partial<Quic.Tuning>]>
    : [])
]

const fmt = (n: number | undefined, digits = 0) =>
  n === undefined || Number.isNaN(n) ? "—" : n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })

const main = Effect.gen(function*() {
  const rows: Array<Row> = []
  const floor = yield* tlsRow
  for (const [name, tuning] of scenarios) {
    process.stderr.write(`running ${name}…\n`)
    rows.push(yield* quicRow(name, tuning))
  }
  rows.push(floor)
  const header = [
    "transport",
    "lat c=1 p50 µs",
    "p99 µs",
    "lat/stream p50 µs",
    "req/s c=64",
    "req/s c=64 coalesced",
    "req/s c=64 stream/req",
    "setup ms",
    "MiB/s (10 MiB)",
    "vs floor MiB/s"
  ]
  const lines = rows.map((r) => [
    r.name,
    fmt(r.p50),
    fmt(r.p99),
    fmt(r.p50Stream),
    fmt(r.rps),
    fmt(r.rpsCoalesced),
    fmt(r.rpsStreams),
    fmt(r.setupMs, 1),
    `${r.capped ? "<" : ""}${fmt(r.mibs, 1)}`,
    `${fmt((r.mibs ?? 0) / (floor.mibs ?? 1), 3)}×`
  ])
  console.log(`\nRaw echo, ${quick ? "QUICK (reduced counts)" : "full counts"}; server and client in one process; frame ${frame.length} B\n`)
  console.log(`| ${header.join(" | ")} |`)
  console.log(`|${header.map(() => "---").join("|")}|`)
  for (const line of lines) console.log(`| ${line.join(" | ")} |`)
})

Effect.runPromise(main).catch((e) => {
  console.error(e)
  process.exit(1)
})
