/**
 * A head and two workers in one process, over QUIC on 127.0.0.1.
 *
 * Both workers serve `container/exec`. They dial the head (a reconnecting `Peer.connect` link); the head imports each
 * worker's operations into its peer graph under the worker's PeerId and reaches them from its own operation
 * `fleet/exec` with `invokePeer`. A worker calls the head back over the connection it opened. Then the head's caller
 * gives up on a slow call (the worker's handler is interrupted), and a worker goes away (calls to it fail at once).
 *
 *   npx tsx examples/head-workers.ts
 */
import { Deferred, Effect, Exit, Option, Schema, Scope } from "effect"
import type { Duration } from "effect"
import { pathToFileURL } from "node:url"
import {
  CallProtocol,
  Dialers,
  Identity,
  IdentityProvider,
  Operation,
  OperationRegistry,
  Peer,
  PeerCompositeEnv,
  PeerEntry,
  Quic,
  Tls
} from "../src/index.js"

const newKey = () => crypto.getRandomValues(new Uint8Array(32))
const fingerprintOf = (seed: Uint8Array) => Tls.ed25519Fingerprint(Tls.ed25519PublicKey(seed))

/** The operations every worker serves. */
const workerOperations = (name: string, interrupted: Deferred.Deferred<void>) => [
  Operation.query({
    name: "container/exec",
    input: Schema.Struct({ cmd: Schema.String }),
    output: Schema.Struct({ worker: Schema.String, output: Schema.String, on_behalf_of: Schema.NullOr(Schema.String) }),
    handler: ({ cmd }, ctx) =>
      Effect.succeed({
        worker: name,
        output: `ran ${JSON.stringify(cmd)}`,
        on_behalf_of: Option.getOrNull(Option.map(ctx.forwardedFor, (i) => i.id))
      })
  }),
  Operation.query({
    name: "container/build",
    input: Schema.Unknown,
    output: Schema.String,
    handler: () => Effect.never.pipe(Effect.onInterrupt(() => Deferred.succeed(interrupted, undefined)))
  }),
  Operation.query({
    name: "worker/report",
    input: Schema.Unknown,
    output: Schema.Unknown,
    // this handler may call exactly one operation, on exactly one peer: head/checkin on the head
    env: PeerCompositeEnv.scopedPeerEnv([], [{ peer: "head", name: "head/checkin" }]),
    handler: (_, ctx) => PeerCompositeEnv.invokePeer(ctx, PeerCompositeEnv.Specific("head"), "head/checkin", { worker: name })
  })
]

/** The head's own operations: `fleet/exec` runs a command on one worker (or on whichever serves it first). */
const headOperations = [
  Operation.query({
    name: "head/checkin",
    input: Schema.Struct({ worker: Schema.String }),
    output: Schema.String,
    handler: ({ worker }, ctx) =>
      Effect.succeed(`welcome ${worker} (authenticated as ${Option.getOrElse(Option.map(ctx.identity, (i) => i.id), () => "nobody")})`)
  }),
  Operation.query({
    name: "fleet/exec",
    input: Schema.Struct({ worker: Schema.optional(Schema.String), op: Schema.String, cmd: Schema.String }),
    output: Schema.Unknown,
    authority: Operation.authority("fleet"),
    env: ["container/exec", "container/build"],
    handler: ({ cmd, op, worker }, ctx) =>
      PeerCompositeEnv.invokePeer(
        ctx,
        worker === undefined ? PeerCompositeEnv.Any : PeerCompositeEnv.Specific(worker),
        `container/${op}`,
        { cmd }
      )
  })
]

export const main: Effect.Effect<ReadonlyArray<string>, unknown> = Effect.scoped(Effect.gen(function*() {
  const lines: Array<string> = []
  const say = (line: string) => Effect.sync(() => void lines.push(line))
  const keys = { head: newKey(), "worker-a": newKey(), "worker-b": newKey() }

  // Who is who: every node knows the others' key fingerprints (in a real node: the peers of its config).
  const peers = Object.entries(keys).map(([peer_id, key]) => PeerEntry.make({ peer_id, fingerprints: [fingerprintOf(key)] }))
  const authenticator = yield* Effect.provide(IdentityProvider.IdentityProvider, IdentityProvider.layerEntries(peers))

  // The head: a registry, a peer graph over it, a QUIC endpoint serving the graph.
  const headRegistry = yield* OperationRegistry.make(headOperations)
  const head = yield* Peer.Composite.make(headRegistry.source, { listPeers: true })
  const endpoint = yield* Quic.makeEndpoint({
    host: "127.0.0.1",
    port: 0,
    identity: Tls.RawKey(keys.head),
    handlers: { [CallProtocol.ALPN]: CallProtocol.handler(Peer.serveOptions(head, { authenticator })) }
  })
  const headUrl = `quic://127.0.0.1:${endpoint.address.port}`
  yield* say(`head listening on ${headUrl}`)

  // The workers: each dials the head and keeps the link up (reconnecting with backoff). Each runs in its own scope,
  // so closing it stops the worker as if its process had died.
  const interrupted = yield* Deferred.make<void>()
  const startWorker = (name: "worker-a" | "worker-b") =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
      const graph = yield* Effect.gen(function*() {
        const registry = yield* OperationRegistry.make(workerOperations(name, interrupted))
        const graph = yield* Peer.Composite.make(registry.source)
        yield* Peer.connect(graph, {
          peerId: "head",
          address: headUrl,
          credentials: { identity: Tls.RawKey(keys[name]), expectedFingerprint: endpoint.fingerprint },
          authenticator
        })
        return graph
      }).pipe(Scope.extend(scope))
      yield* head.awaitPeer(name)
      return { graph, stop: Scope.close(scope, Exit.void) }
    })
  const workerA = yield* startWorker("worker-a")
  const workerB = yield* startWorker("worker-b")
  for (const peer of head.peers()) {
    yield* say(`head imported ${peer.id}: ${peer.operations.map((o) => `${o.name} (${o.op_type})`).join(", ")}`)
  }

  // The head addresses each worker, then whichever serves container/exec first.
  const operator: OperationRegistry.LocalCallOptions = { identity: Identity.make("operator") }
  const exec = (op: string, worker?: string, timeout?: Duration.DurationInput) =>
    head.call(
      "fleet/exec",
      { op, cmd: "uptime", ...(worker === undefined ? {} : { worker }) },
      timeout === undefined ? operator : { ...operator, timeout }
    )
  for (const worker of ["worker-a", "worker-b", undefined]) {
    yield* say(`fleet/exec on ${worker ?? "any worker"} -> ${JSON.stringify(yield* exec("exec", worker))}`)
  }

  // Reverse direction: a worker calls the head over the connection it opened.
  yield* say(`worker-a asks the head -> ${JSON.stringify(yield* workerA.graph.call("worker/report", {}))}`)

  // A deadline on the head's call reaches the worker; when it passes, the worker's handler is interrupted.
  const late = yield* Effect.flip(exec("build", "worker-a", "200 millis"))
  yield* Deferred.await(interrupted)
  yield* say(`fleet/exec build on worker-a with 200 ms -> ${late.code} "${late.message}"; worker-a's handler was interrupted`)

  // A worker goes away: calls routed to it fail at once, naming it; the others still serve.
  yield* workerB.stop
  const away = yield* Effect.flip(exec("exec", "worker-b"))
  yield* say(`worker-b stopped: fleet/exec on worker-b -> ${away.code} "${away.message}"`)
  yield* say(`fleet/exec on any worker -> ${JSON.stringify(yield* exec("exec"))}`)
  return lines
})).pipe(Effect.provide(Dialers.layer))

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  Effect.runPromise(main).then(
    (lines) => lines.forEach((line) => console.log(line)),
    (error) => {
      console.error(error)
      process.exitCode = 1
    }
  )
}
