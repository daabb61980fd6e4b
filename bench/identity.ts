/**
 * `npm run bench:identity` — identity resolution speed and cross-process change propagation.
 *
 * 1. Resolutions per second, each measured inside one Effect loop (`yield* provider.resolve…` N times), beside
 *    the raw baselines in the same run: a bare `Map.get` for fingerprints, and `sha256 + Map.get` for tokens (a
 *    token lookup cannot do less than hash the token once). Goal: ≥ 1M/s.
 * 2. Propagation: a child process (`test/layers/sqlite/writer.ts serve`) puts one peer at a time into the SQLite
 *    file; this process — which never writes — waits for its own provider to resolve that peer. Latency = the
 *    moment the new index is in place here − the moment the child's commit returned (both `process.hrtime`, one
 *    monotonic clock per machine). Goal: p99 ≤ 10 ms over 200 writes.
 * 3. PostgreSQL, when `ALKNET_TEST_PG_URL` names a server (a scratch database is created and dropped): the same
 *    resolutions (the index is in memory, as with SQLite), and cross-node propagation: the child
 *    (`test/layers/pg/other-node.ts serve`) is another node with its own `PgStore`, writing through it; this node
 *    applies the change on PostgreSQL's notification. Goal: p99 ≤ 50 ms over 200 writes.
 *
 * `--quick` runs fewer iterations (a smoke run); `--writes N` sets the propagation writes.
 */
import { Deferred, Effect, Layer, Option, Redacted, Stream } from "effect"
import * as child from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"
import * as PgStore from "../src/layers/pg/PgStore.js"
import * as SqliteStore from "../src/layers/sqlite/SqliteStore.js"
import * as PeerEntry from "../src/schema/PeerEntry.js"
import * as IdentityProvider from "../src/services/IdentityProvider.js"
import * as IdentityStore from "../src/services/IdentityStore.js"
import * as Token from "../src/services/Token.js"
import { freshDatabase, serverUrl } from "../test/layers/pg/harness.js"
import { fingerprintOf } from "../test/layers/sqlite/writer.js"

const quick = process.argv.includes("--quick")
const LOOKUPS = quick ? 200_000 : 1_000_000
const ROUNDS = quick ? 2 : 5
const writesFlag = process.argv.indexOf("--writes")
/** Propagation writes per backend (`--writes N` overrides). */
const WRITES = writesFlag > 0 ? Number(process.argv[writesFlag + 1]) : quick ? 20 : 200
const WARMUP = quick ? 5 : 20
const PEERS = 1_000
const KEYS = 1_000

const rate = (n: number, ms: number) => n / (ms / 1000)
const fmt = (n: number) => Math.round(n).toLocaleString("en-US")

/** One measurement: iterations per second of a synchronous body, or of an effect inside one Effect loop. */
type Case =
  | { readonly name: string; readonly baseline: string; readonly sync: (i: number) => unknown }
  | { readonly name: string; readonly baseline: string; readonly effect: (i: number) => Effect.Effect<unknown> }

const once = (c: Case, n: number) =>
  "sync" in c
    ? Effect.sync(() => {
      const start = performance.now()
      for (let i = 0; i < n; i++) c.sync(i)
      return rate(n, performance.now() - start)
    })
    : Effect.gen(function*() {
      const start = performance.now()
      for (let i = 0; i < n; i++) yield* c.effect(i)
      return rate(n, performance.now() - start)
    })

/**
 * Run every case ROUNDS times, round-robin (so background load hits all cases alike), after one warm-up round;
 * keep each case's best round.
 */
const measure = (cases: ReadonlyArray<Case>) =>
  Effect.gen(function*() {
    const best = new Map<string, number>()
    for (const c of cases) yield* once(c, Math.min(LOOKUPS, 50_000))
    for (let round = 0; round < ROUNDS; round++) {
      for (const c of cases) best.set(c.name, Math.max(best.get(c.name) ?? 0, yield* once(c, LOOKUPS)))
    }
    return cases.map((c) => [c.name, best.get(c.name)!, best.get(c.baseline)!] as const)
  })

/** Entries: PEERS peers with two fingerprints and a token each, KEYS API keys. */
const makeEntries = Effect.gen(function*() {
  const peerTokens: Array<Redacted.Redacted<string>> = []
  const peers = yield* Effect.forEach(Array.from({ length: PEERS }, (_, i) => i), (i) =>
    Effect.map(Token.generate, ({ hash, token }) => {
      peerTokens.push(token)
      return PeerEntry.make({
        peer_id: `peer-${i}`,
        fingerprints: [fingerprintOf(`peer-${i}`), fingerprintOf(`peer-${i}-x509`).replace("ed25519:", "SHA256:")],
        auth_token_hash: hash,
        scopes: ["call"]
      })
    }))
  const generated = yield* Effect.forEach(Array.from({ length: KEYS }), () => Token.generate)
  const unique = [...new Map(generated.map((g) => [g.prefix, g])).values()]
  return { peers, peerTokens, keys: unique }
})

const resolution = Effect.scoped(Effect.gen(function*() {
  const { keys, peerTokens, peers } = yield* makeEntries
  const fingerprints = peers.flatMap((p) => p.fingerprints)
  const apiTokens = keys.map((k) => k.token)
  const rawTokens = [...peerTokens, ...apiTokens].map(Redacted.value)

  // Baselines: plain maps with nothing but the lookup.
  const fpMap = new Map(fingerprints.map((f, i) => [f, i]))
  const hashMap = new Map(rawTokens.map((t, i) => [Token.sha256Hex(t), i]))
  const memory = yield* IdentityStore.makeMemory({
    peers,
    apiKeys: keys.map((k) => ({ prefix: k.prefix, hash: k.hash, scopes: ["read"], description: "" }))
  })
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "alknet-bench-"))
  const sqlite = yield* Effect.provide(IdentityStore.IdentityStore, yield* Layer.build(
    SqliteStore.layer({ filename: path.join(dir, "bench.db") })
  ))
  const pg = serverUrl === undefined ? undefined : yield* Effect.provide(
    IdentityStore.IdentityStore,
    yield* Layer.build(PgStore.layer({ url: Redacted.make(yield* freshDatabase) }))
  )
  for (const store of pg === undefined ? [sqlite] : [sqlite, pg]) {
    yield* Effect.forEach(peers, store.putPeer, { discard: true, concurrency: 4 })
    yield* Effect.forEach(keys, (k) => store.putApiKey({ prefix: k.prefix, hash: k.hash, scopes: [], description: "" }), {
      discard: true,
      concurrency: 4
    })
  }

  // Every lookup below must succeed — a benchmark of misses would measure nothing.
  for (const store of pg === undefined ? [memory, sqlite] : [memory, sqlite, pg]) {
    for (const f of fingerprints.slice(0, 10)) Option.getOrThrow(yield* store.resolveFingerprint(f))
    for (const t of [...peerTokens.slice(0, 10), ...apiTokens.slice(0, 10)]) Option.getOrThrow(yield* store.resolveToken(t))
  }
  const index = IdentityProvider.makeIndex(peers, [])
  const now = () => Date.now()
  const fp = (i: number) => fingerprints[i % fingerprints.length]!
  const FP = "fingerprint: raw Map.get (baseline)"
  const TOKEN = "token: raw sha256 + Map.get (baseline)"
  const rows = yield* measure([
    { name: FP, baseline: FP, sync: (i) => fpMap.get(fp(i)) },
    { name: "fingerprint: lookupFingerprint, no Effect", baseline: FP, sync: (i) =>
      IdentityProvider.lookupFingerprint(index, fp(i)) },
    { name: "fingerprint: resolveFingerprint, memory", baseline: FP, effect: (i) => memory.resolveFingerprint(fp(i)) },
    { name: "fingerprint: resolveFingerprint, SQLite", baseline: FP, effect: (i) => sqlite.resolveFingerprint(fp(i)) },
    { name: TOKEN, baseline: TOKEN, sync: (i) => hashMap.get(Token.sha256Hex(rawTokens[i % PEERS]!)) },
    { name: "token: lookupToken peer token, no Effect", baseline: TOKEN, sync: (i) =>
      IdentityProvider.lookupToken(index, rawTokens[i % PEERS]!, now) },
    { name: "token: resolveToken peer token, memory", baseline: TOKEN, effect: (i) =>
      memory.resolveToken(peerTokens[i % peerTokens.length]!) },
    { name: "token: resolveToken API key, memory", baseline: TOKEN, effect: (i) =>
      memory.resolveToken(apiTokens[i % apiTokens.length]!) },
    { name: "token: resolveToken API key, SQLite", baseline: TOKEN, effect: (i) =>
      sqlite.resolveToken(apiTokens[i % apiTokens.length]!) },
    ...(pg === undefined ? [] : [
      { name: "fingerprint: resolveFingerprint, PostgreSQL", baseline: FP, effect: (i: number) =>
        pg.resolveFingerprint(fp(i)) },
      { name: "token: resolveToken API key, PostgreSQL", baseline: TOKEN, effect: (i: number) =>
        pg.resolveToken(apiTokens[i % apiTokens.length]!) }
    ])
  ])
  yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
  return rows
}))

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN

/** Where the writer child writes, this process's store on it, and the child's script. */
interface Target {
  readonly store: IdentityStore.Service
  readonly where: string
  readonly script: string
}

const sqliteTarget = Effect.gen(function*() {
  const dir = yield* Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "alknet-bench-"))),
    (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
  )
  const filename = path.join(dir, "propagation.db")
  const store = yield* Effect.provide(IdentityStore.IdentityStore, yield* Layer.build(SqliteStore.layer({ filename })))
  return { store, where: filename, script: "../test/layers/sqlite/writer.ts" } satisfies Target
})

const pgTarget = Effect.gen(function*() {
  const url = yield* freshDatabase
  const store = yield* Effect.provide(
    IdentityStore.IdentityStore,
    yield* Layer.build(PgStore.layer({ url: Redacted.make(url) }))
  )
  return { store, where: url, script: "../test/layers/pg/other-node.ts" } satisfies Target
})

const propagation = (target: Target) => Effect.gen(function*() {
  const { store } = target
  const writer = child.spawn(
    process.execPath,
    ["--import", "tsx", path.join(import.meta.dirname, target.script), target.where, "serve"],
    { stdio: ["pipe", "pipe", "inherit"] }
  )
  yield* Effect.addFinalizer(() => Effect.sync(() => writer.kill()))
  const committed = new Map<string, Deferred.Deferred<bigint>>()
  const seen = new Map<string, Deferred.Deferred<bigint>>()
  const slot = (map: Map<string, Deferred.Deferred<bigint>>, id: string) => {
    let d = map.get(id)
    if (d === undefined) map.set(id, d = Deferred.unsafeMake<bigint>(Effect.runSync(Effect.fiberId)))
    return d
  }
  readline.createInterface({ input: writer.stdout! }).on("line", (line) => {
    const [id, ns] = line.split(" ")
    if (id !== undefined && ns !== undefined) Deferred.unsafeDone(slot(committed, id), Effect.succeed(BigInt(ns)))
  })

  // Watch this process's index: after each swap, note when each awaited peer first resolves.
  let waiting: string | undefined
  yield* store.changes.pipe(
    Stream.runForEach(() =>
      Effect.gen(function*() {
        const id = waiting
        if (id === undefined) return
        if (Option.isSome(yield* store.resolveFingerprint(fingerprintOf(id)))) {
          const now = process.hrtime.bigint()
          waiting = undefined
          yield* Deferred.succeed(slot(seen, id), now)
        }
      })
    ),
    Effect.forkScoped
  )

  const latencies: Array<number> = []
  for (let i = 0; i < WARMUP + WRITES; i++) {
    const id = `w-${i}`
    waiting = id
    writer.stdin!.write(`${id}\n`)
    const [at, visible] = yield* Effect.all([Deferred.await(slot(committed, id)), Deferred.await(slot(seen, id))])
    if (i >= WARMUP) latencies.push(Number(visible - at) / 1e6)
  }
  writer.stdin!.end()
  return latencies.sort((a, b) => a - b)
})

const program = Effect.gen(function*() {
  const rows = yield* resolution
  const w = Math.max(...rows.map(([name]) => name.length))
  console.log(`\nidentity resolution (${fmt(LOOKUPS)} lookups each; ${PEERS} peers × 2 fingerprints, ${KEYS} API keys)\n`)
  console.log(`${"".padEnd(w)}  ${"ops/s".padStart(12)}  ${"vs baseline".padStart(11)}  goal ≥ 1M/s`)
  for (const [name, ops, base] of rows) {
    const goal = name.includes("baseline") || name.includes("no Effect") ? "" : ops >= 1_000_000 ? "met" : "MISSED"
    console.log(`${name.padEnd(w)}  ${fmt(ops).padStart(12)}  ${(ops / base).toFixed(2).padStart(11)}  ${goal}`)
  }
  const report = (title: string, goal: number, latencies: ReadonlyArray<number>) => {
    console.log(`\n${title} (${latencies.length} writes by a child process, ms)\n`)
    console.log(`${"p50".padStart(8)}${"p90".padStart(8)}${"p99".padStart(8)}${"max".padStart(8)}  goal p99 ≤ ${goal} ms`)
    const p = (q: number) => percentile(latencies, q).toFixed(2).padStart(8)
    console.log(`${p(50)}${p(90)}${p(99)}${p(100)}  ${percentile(latencies, 99) <= goal ? "met" : "MISSED"}`)
  }
  report("cross-process propagation (SQLite)", 10, yield* Effect.scoped(Effect.flatMap(sqliteTarget, propagation)))
  if (serverUrl === undefined) {
    console.log("\nPostgreSQL: skipped (set ALKNET_TEST_PG_URL to a server where a scratch database may be created)")
  } else {
    report("cross-node propagation (PostgreSQL, LISTEN/NOTIFY)", 50, yield* Effect.scoped(Effect.flatMap(pgTarget, propagation)))
  }
  console.log(`\nmachine: ${os.cpus().length} cores, load average ${os.loadavg().map((l) => l.toFixed(1)).join(" ")}`)
})

Effect.runPromise(Effect.scoped(program)).then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
