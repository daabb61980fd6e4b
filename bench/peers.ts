/**
 * `npm run bench:peers` — the peer graph on loopback, head and worker in one process, over WebSocket and QUIC.
 *
 * - call latency (concurrency 1, p50/p99): client → head (a local operation, the baseline) beside client → head →
 *   worker (the head forwards with `invokePeer` through `from_call`); and head → worker on the bare connection beside
 *   head → worker through the graph (routing + forwarding leaf + dispatcher), each with its ratio;
 * - abort propagation: the client interrupts a call the head is forwarding to a worker; the time from the interrupt
 *   until the worker's handler observes its interruption (goal ≤ 5 ms p50 on the fastest transport).
 *
 * Rounds alternate the measured pairs (the machine is shared and noisy). `--quick` runs 1/5.
 */
import { Deferred, Effect, Fiber, Option, Schema } from "effect"
import type { Scope } from "effect"
import * as Quic from "../src/layers/quic/Quic.js"
import * as WebSocket from "../src/layers/ws/WebSocket.js"
import * as Composite from "../src/peer/Composite.js"
import * as Peer from "../src/peer/Peer.js"
import * as Dialers from "../src/layers/Dialers.js"
import * as CallClient from "../src/layers/Client.js"
import * as CallProtocol from "../src/services/CallProtocol.js"
import * as Operation from "../src/services/Operation.js"
import * as OperationRegistry from "../src/services/OperationRegistry.js"
import * as PeerCompositeEnv from "../src/services/PeerCompositeEnv.js"
import * as Tls from "../src/services/Tls.js"

const quick = process.argv.includes("--quick")
const scale = (n: number) => (quick ? Math.max(10, Math.floor(n / 5)) : n)
const INPUT = { n: 1, s: "x".repeat(100) }
const seeds = { head: new Uint8Array(32).fill(21), worker: new Uint8Array(32).fill(22), client: new Uint8Array(32).fill(23) }
const fingerprintOf = (s: Uint8Array) => Tls.ed25519Fingerprint(Tls.ed25519PublicKey(s))
const ids = new Map([[fingerprintOf(seeds.head), "head"], [fingerprintOf(seeds.worker), "worker"], [fingerprintOf(seeds.client), "client"]])
const authenticator: CallProtocol.Authenticator = {
  resolveFingerprint: (fp) => Effect.succeed(Option.map(Option.fromNullable(ids.get(fp)), (id) => ({ id, scopes: [], resources: {} }))),
  resolveToken: () => Effect.succeed(Option.none())
}
const now = () => performance.now()
const log = (s: string) => Effect.sync(() => process.stderr.write(`${s}\n`))
const pct = (sorted: ReadonlyArray<number>, p: number) => sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!
const sorted = (xs: Array<number>) => [...xs].sort((a, b) => a - b)

interface Net {
  readonly name: string
  readonly listen: (options: CallProtocol.ServeOptions) => Effect.Effect<{ url: string; fingerprint: string }, unknown, Scope.Scope>
}
const nets: ReadonlyArray<Net> = [
  {
    name: "WebSocket (wss)",
    listen: (options) =>
      Effect.map(
        WebSocket.listen({ host: "127.0.0.1", port: 0, identity: Tls.RawKey(seeds.head), onConnection: CallProtocol.webSocketHandler(options) }),
        (l) => ({ url: l.url, fingerprint: Option.getOrThrow(l.fingerprint) })
      )
  },
  {
    name: "QUIC",
    listen: (options) =>
      Effect.map(
        Quic.makeEndpoint({ host: "127.0.0.1", port: 0, identity: Tls.RawKey(seeds.head), handlers: { [CallProtocol.ALPN]: CallProtocol.handler(options) } }),
        (e) => ({ url: `quic://127.0.0.1:${e.address.port}`, fingerprint: e.fingerprint })
      )
  }
]

const echo = Operation.query({ name: "bench/echo", input: Schema.Unknown, output: Schema.Unknown, handler: (i) => Effect.succeed(i) })

const setup = (net: Net) =>
  Effect.gen(function*() {
    let hang = { started: Deferred.unsafeMake<number>(undefined as never), interrupted: Deferred.unsafeMake<number>(undefined as never) }
    const workerOps = [
      Operation.query({ name: "worker/echo", input: Schema.Unknown, output: Schema.Unknown, handler: (i) => Effect.succeed(i) }),
      Operation.query({
        name: "worker/hang",
        input: Schema.Unknown,
        output: Schema.Null,
        handler: () =>
          Deferred.succeed(hang.started, now()).pipe(
            Effect.zipRight(Effect.never),
            Effect.onInterrupt(() => Effect.suspend(() => Deferred.succeed(hang.interrupted, now())))
          )
      })
    ]
    const forward = (name: string, target: string) =>
      Operation.query({
        name,
        input: Schema.Unknown,
        output: Schema.Unknown,
        env: [target],
        handler: (input, ctx) => PeerCompositeEnv.invokePeer(ctx, PeerCompositeEnv.Specific("worker"), target, input)
      })
    const headRegistry = yield* OperationRegistry.make([echo, forward("head/echo", "worker/echo"), forward("head/hang", "worker/hang")])
    const head = yield* Composite.make(headRegistry.source)
    const accepted: Array<CallClient.ClientConnection | unknown> = []
    const serve = Peer.serveOptions(head, { authenticator })
    const listening = yield* net.listen({
      ...serve,
      onConnection: (c, info) => Effect.zipRight(Effect.sync(() => accepted.push(c)), serve.onConnection!(c, info))
    })
    const workerRegistry = yield* OperationRegistry.make(workerOps)
    const worker = yield* Composite.make(workerRegistry.source)
    yield* Peer.connect(worker, {
      peerId: "head",
      address: listening.url,
      credentials: { identity: Tls.RawKey(seeds.worker), expectedFingerprint: listening.fingerprint },
      authenticator
    })
    yield* head.awaitPeer("worker")
    const client = yield* CallClient.connect(listening.url, { identity: Tls.RawKey(seeds.client), expectedFingerprint: listening.fingerprint })
    // the head's side of the worker's connection: the bare connection the forwarding leaf uses
    const toWorker = accepted.find((c): c is CallClient.ClientConnection =>
      typeof c === "object" && c !== null && "call" in c && !(c as CallClient.ClientConnection).isClosed()
    )!
    const resetHang = () => {
      hang = { started: Deferred.unsafeMake<number>(undefined as never), interrupted: Deferred.unsafeMake<number>(undefined as never) }
      return hang
    }
    return { head, client, toWorker, resetHang }
  })

const time = (effect: Effect.Effect<unknown, unknown>) =>
  Effect.suspend(() => {
    const t0 = now()
    return Effect.map(effect, () => now() - t0)
  })

const run = (net: Net) =>
  Effect.scoped(Effect.gen(function*() {
    const { client, head, resetHang, toWorker } = yield* setup(net)
    const series: Record<string, Array<number>> = { local: [], forwarded: [], bare: [], graph: [], abort: [] }
    const pairs: ReadonlyArray<[string, Effect.Effect<unknown, unknown>]> = [
      ["local", client.call("bench/echo", INPUT)],
      ["forwarded", client.call("head/echo", INPUT)],
      ["bare", toWorker.call("worker/echo", INPUT)],
      ["graph", head.call("head/echo", INPUT)]
    ]
    for (const [, effect] of pairs) for (let i = 0; i < 200; i++) yield* effect // warm-up
    const rounds = 10
    const perRound = scale(300)
    for (let r = 0; r < rounds; r++) {
      for (const [name, effect] of pairs) {
        for (let i = 0; i < perRound; i++) series[name]!.push(yield* time(effect))
      }
    }
    const aborts = scale(200)
    for (let i = 0; i < aborts + 20; i++) {
      const hang = resetHang()
      const fiber = yield* Effect.fork(client.call("head/hang", INPUT))
      yield* Deferred.await(hang.started)
      const t0 = now()
      yield* Effect.fork(Fiber.interrupt(fiber))
      const t1 = yield* Deferred.await(hang.interrupted)
      yield* Fiber.await(fiber)
      if (i >= 20) series.abort!.push(t1 - t0)
    }
    return series
  }))

const ms = (x: number) => `${x.toFixed(3)} ms`

const main = Effect.gen(function*() {
  const rows: Array<Array<string>> = []
  for (const net of nets) {
    yield* log(`${net.name}…`)
    const s = yield* run(net).pipe(Effect.provide(Dialers.layer))
    const stat = (name: string) => {
      const xs = sorted(s[name]!)
      return { p50: pct(xs, 0.5), p99: pct(xs, 0.99) }
    }
    const local = stat("local"), forwarded = stat("forwarded"), bare = stat("bare"), graph = stat("graph"), abort = stat("abort")
    rows.push([net.name, "call client → head (local op, baseline)", ms(local.p50), ms(local.p99), "1.00x"])
    rows.push([net.name, "call client → head → worker (forwarded)", ms(forwarded.p50), ms(forwarded.p99), `${(forwarded.p50 / local.p50).toFixed(2)}x`])
    rows.push([net.name, "call head → worker (bare connection, baseline)", ms(bare.p50), ms(bare.p99), "1.00x"])
    rows.push([net.name, "call head → worker (through the graph)", ms(graph.p50), ms(graph.p99), `${(graph.p50 / bare.p50).toFixed(2)}x`])
    rows.push([net.name, "abort client → head → worker (interrupt → worker sees it)", ms(abort.p50), ms(abort.p99), abort.p50 <= 5 ? "≤ 5 ms ✓" : "> 5 ms ✗"])
  }
  const header = ["transport", "measure", "p50", "p99", "ratio / goal"]
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: ReadonlyArray<string>) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`
  console.log(line(header))
  console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`)
  for (const row of rows) console.log(line(row))
})

Effect.runPromise(main).then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
