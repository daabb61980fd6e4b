/**
 * The peer graph over a real transport: a head, two workers that both expose `container/exec`, and a client of the
 * head. `peers.test.ts` runs it over QUIC and WebSocket. The nodes are built once per transport (QUIC handshakes are
 * slow on a loaded machine); each scenario leaves them idle and checks that nothing is left running.
 */
import { expect, layer } from "@effect/vitest"
import { Chunk, Context, Deferred, Effect, Exit, Fiber, Layer, Option, Schedule, Schema, Scope, Stream } from "effect"
import type * as Connection from "../../src/call/Connection.js"
import type { CallError } from "../../src/errors/CallError.js"
import * as CallClient from "../../src/layers/Client.js"
import * as OperationRegistry from "../../src/services/OperationRegistry.js"
import * as Operation from "../../src/services/Operation.js"
import * as Tls from "../../src/services/Tls.js"
import { fromCall } from "../../src/peer/FromCall.js"
import * as H from "./harness.js"

interface WorldShape {
  readonly head: H.Head
  readonly client: CallClient.ClientConnection
  readonly workers: Record<"worker-a" | "worker-b", H.Worker>
}
class World extends Context.Tag("test/PeerWorld")<World, {
  readonly current: () => WorldShape
  readonly restart: (name: "worker-b") => Effect.Effect<H.Worker, unknown>
}>() {}

const worldLayer = (net: H.Net) =>
  Layer.scoped(
    World,
    Effect.gen(function*() {
      const head = yield* H.startHead(net)
      const a = yield* H.startWorker("worker-a", head)
      yield* head.graph.awaitPeer("worker-a")
      const b = yield* H.startWorker("worker-b", head)
      yield* head.graph.awaitPeer("worker-b")
      const client = yield* CallClient.connect(head.url, {
        identity: Tls.RawKey(H.seeds.client),
        expectedFingerprint: head.fingerprint
      })
      const state: { -readonly [K in keyof WorldShape]: WorldShape[K] } = {
        head,
        client,
        workers: { "worker-a": a, "worker-b": b }
      }
      yield* Effect.addFinalizer(() => Effect.forEach(Object.values(state.workers), (w) => w.kill, { discard: true }))
      return {
        current: () => state,
        restart: (name) =>
          Effect.tap(H.startWorker(name, head, state.workers[name].probe), (w) => Effect.sync(() => (state.workers[name] = w)))
      }
    })
  )

/** Everything back to zero: connections, the graphs' dispatchers. */
const expectIdle = Effect.gen(function*() {
  const { client, head, workers } = (yield* World).current()
  const connections: Array<Connection.Connection> = [client, ...head.accepted.filter((c) => !c.isClosed())]
  for (const worker of Object.values(workers)) {
    connections.push(yield* worker.link.connection)
  }
  for (const connection of connections) {
    expect(yield* H.idle(connection)).toEqual({ requests: 0, pending: 0, exchanges: 0, handlers: 0, detached: 0 })
  }
  expect(head.graph.running()).toBe(0)
  for (const worker of Object.values(workers)) expect(worker.graph.running()).toBe(0)
})

const within = <A, E>(effect: Effect.Effect<A, E>, what: string) =>
  Effect.timeoutFail(effect, { duration: "5 seconds", onTimeout: () => new Error(`timed out: ${what}`) })

export const peerSuite = (net: H.Net) =>
  layer(worldLayer(net), { excludeTestServices: true, timeout: 30_000 })(`peer graph over ${net.name}`, (it) => {
    it.effect("the head reaches each worker by PeerRef.Specific; PeerRef.Any and plain routing pick the first", () =>
      Effect.gen(function*() {
        const { client } = (yield* World).current()
        const exec = (peer?: string) =>
          Effect.map(
            client.call("head/exec", peer === undefined ? { cmd: "uptime" } : { peer, cmd: "uptime" }),
            (out) => (out as { worker: string }).worker
          )
        expect(yield* exec("worker-a")).toBe("worker-a")
        expect(yield* exec("worker-b")).toBe("worker-b")
        expect(yield* exec("*")).toBe("worker-a")
        expect(yield* exec()).toBe("worker-a")
        const unknown = yield* Effect.flip(exec("worker-z"))
        expect([unknown.code, unknown.message]).toEqual(["NOT_FOUND", "operation not found: worker-z/container/exec"])
        // imported operations are Internal: the client cannot call them through the head
        const direct = yield* Effect.flip(client.call("container/exec", { cmd: "x" }))
        expect(direct.code).toBe("NOT_FOUND")
        const listed = (yield* client.call("services/list-peers", {})) as {
          peers: Array<{ peer_id: string; operations: Array<{ name: string; op_type: string }> }>
        }
        expect(listed.peers.map((p) => p.peer_id)).toEqual(["local", "worker-a", "worker-b"])
        const ops = listed.peers[1]!.operations
        expect(ops).toContainEqual({ name: "container/exec", namespace: "container", op_type: "query" })
        expect(ops).toContainEqual({ name: "container/logs", namespace: "container", op_type: "subscription" })
        expect(listed.peers[0]!.operations.map((o) => o.name)).toContain("head/exec")
        yield* expectIdle
      }))

    it.effect("a same-name collision within one peer is an error; the same name on two peers is fine", () =>
      Effect.gen(function*() {
        const { head } = (yield* World).current()
        const statuses = head.graph.peers()
        expect(statuses.filter((p) => p.operations.some((o) => o.name === "container/exec")).map((p) => p.id))
          .toEqual(["worker-a", "worker-b"])
        const extra = Operation.query({
          name: "container/exec",
          input: Schema.Unknown,
          output: Schema.Unknown,
          handler: () => Effect.succeed("shadow")
        }).with({ provenance: "FromCall" })
        const error = yield* Effect.flip(Effect.scoped(head.graph.add("worker-a", [extra], { slot: "other" })))
        expect([error.reason, error.message]).toEqual(["SamePeerCollision", "peer worker-a already serves container/exec"])
        const twice = yield* Effect.flip(Effect.scoped(head.graph.add("worker-c", [extra, extra])))
        expect(twice.reason).toBe("SamePeerCollision")
        // nothing was added by the failed attempts
        expect(head.graph.peers().map((p) => p.id)).toEqual(["worker-a", "worker-b"])
      }))

    it.effect("a worker calls the head over the connection it opened", () =>
      Effect.gen(function*() {
        const { workers } = (yield* World).current()
        const answer = yield* workers["worker-b"].graph.call("worker/ask-head", {})
        expect(answer).toBe("hello worker-b, from the head (you are worker-b)")
        // the pinned entry allows only head/hello on the head
        yield* expectIdle
      }))

    it.effect("a client abort on the head interrupts the worker's handler", () =>
      Effect.gen(function*() {
        const { client, workers } = (yield* World).current()
        const probe = workers["worker-a"].probe
        H.resetProbe(probe)
        const fiber = yield* Effect.fork(client.call("head/hang", { peer: "worker-a", cmd: "sleep" }))
        yield* within(Deferred.await(probe.started), "the worker's handler to start")
        yield* Fiber.interrupt(fiber)
        yield* within(Deferred.await(probe.interrupted), "the worker's handler to be interrupted")
        yield* expectIdle
      }))

    it.effect("the worker sees the caller's remaining time, not a fresh 30 s", () =>
      Effect.gen(function*() {
        const { client } = (yield* World).current()
        const out = (yield* client.call("head/exec", { peer: "worker-b", cmd: "date" }, { timeout: "3 seconds" })) as {
          remaining_ms: number
        }
        expect(out.remaining_ms).toBeGreaterThan(1000)
        expect(out.remaining_ms).toBeLessThanOrEqual(3000)
        const late = yield* Effect.flip(client.call("head/hang", { peer: "worker-b", cmd: "x" }, { timeout: "300 millis" }))
        expect(late.code).toBe("TIMEOUT")
        yield* expectIdle
      }))

    it.effect("forwarded_for reaches the worker and grants nothing; remote errors arrive intact", () =>
      Effect.gen(function*() {
        const { client, head } = (yield* World).current()
        const out = (yield* client.call("head/exec", { peer: "worker-a", cmd: "id" })) as {
          forwarded_for: string | null
          caller: string | null
        }
        // the forwarding leaf runs under the head's composition authority (which holds `admin`) …
        expect(out.forwarded_for).toBe("head-ops")
        // … but the worker authorizes the connection's identity, the head, which does not
        expect(out.caller).toBe("head")
        // container/admin needs `admin`: the worker's discovery did not offer it to the head, so it was not imported …
        const hidden = yield* Effect.flip(client.call("head/admin", { peer: "worker-a", cmd: "x" }))
        expect([hidden.code, hidden.message]).toEqual(["NOT_FOUND", "operation not found: worker-a/container/admin"])
        // … and calling it anyway, on the head's connection, with an admin forwarded_for, is still refused
        const toWorker = head.accepted.find((c) => !c.isClosed())!
        const denied = yield* Effect.flip(
          toWorker.call("container/admin", {}, { forwardedFor: { id: "root", scopes: ["admin"], resources: {} } })
        )
        expect([denied.code, denied.message]).toEqual(["FORBIDDEN", "missing required scope: admin"])
        const failed: CallError = yield* Effect.flip(client.call("head/fail", { peer: "worker-b", cmd: "x" }))
        expect(failed.toPayload()).toEqual({
          code: "NOT_READY",
          message: "worker-b is starting",
          retryable: false,
          details: { eta_ms: 250 }
        })
        yield* expectIdle
      }))

    it.effect("from_call forwards subscriptions as streams and keeps domain errors (adapter over a live connection)", () =>
      Effect.gen(function*() {
        const { head } = (yield* World).current()
        const connection = head.accepted.find((c) => !c.isClosed())!
        const imported = yield* fromCall(connection, { visibility: "external", namespacePrefix: "w" }).import()
        expect(imported.every((r) => r.provenance === "FromCall" && Option.isNone(r.authority))).toBe(true)
        const registry = yield* OperationRegistry.make(imported)
        const lines = Chunk.toArray(yield* Stream.runCollect(registry.subscribe("w/container/logs", { n: 3 })))
        expect(lines).toEqual(["worker-a line 1", "worker-a line 2", "worker-a line 3"])
        const bad = yield* Effect.flip(registry.invoke("w/container/exec", { cmd: 42 }))
        expect(bad.code).toBe("INVALID_INPUT")
        yield* expectIdle
      }).pipe(Effect.scoped))

    it.effect("session operations run under the session's authority, only through its env, until its scope closes", () =>
      Effect.gen(function*() {
        const { client } = (yield* World).current()
        const out = yield* client.call("head/session", { n: 7 })
        expect(out).toEqual({
          counted: { identity: "session-7", authority: "session-7", internal: true, n: 7 },
          stepped: { step_identity: "session-7" },
          plain: "NOT_FOUND"
        })
        const gone = yield* Effect.flip(H.sessionLeft.env!.invoke("session/count", {}))
        expect(gone.code).toBe("NOT_FOUND")
        yield* expectIdle
      }))

    it.effect("a worker killed mid-call: the caller fails promptly, calls to it fail fast, its restart is re-imported", () =>
      Effect.gen(function*() {
        const world = yield* World
        const { client, head, workers } = world.current()
        const worker = workers["worker-b"]
        H.resetProbe(worker.probe)
        const fiber = yield* Effect.fork(client.call("head/hang", { peer: "worker-b", cmd: "sleep" }))
        yield* within(Deferred.await(worker.probe.started), "the worker's handler to start")
        yield* worker.kill
        const error = yield* within(Effect.flip(Fiber.join(fiber)), "the head's caller to fail")
        expect([error.code, error.message]).toEqual(["INTERNAL", "connection closed"])
        const away = yield* Effect.flip(client.call("head/exec", { peer: "worker-b", cmd: "x" }))
        expect([away.code, away.message]).toEqual(["INTERNAL", "peer worker-b is not connected"])
        expect((yield* client.call("head/exec", { peer: "*", cmd: "x" }) as Effect.Effect<{ worker: string }, CallError>).worker)
          .toBe("worker-a")
        yield* world.restart("worker-b")
        yield* within(head.graph.awaitPeer("worker-b"), "the head to re-import worker-b")
        const back = (yield* client.call("head/exec", { peer: "worker-b", cmd: "x" })) as { worker: string }
        expect(back.worker).toBe("worker-b")
        expect(head.graph.peers().map((p) => [p.id, p.connected])).toEqual([["worker-a", true], ["worker-b", true]])
        yield* expectIdle
      }))

    it.effect("a link reconnects with backoff when its peer restarts, and imports again", () =>
      Effect.gen(function*() {
        const headScope = yield* Scope.make()
        const head = yield* Scope.extend(H.startHead(net), headScope)
        const worker = yield* H.startWorker("worker-a", head, undefined, Schedule.spaced("50 millis"))
        yield* Effect.addFinalizer(() => worker.kill)
        expect(yield* worker.graph.call("worker/ask-head", {})).toBe("hello worker-a, from the head (you are worker-a)")
        yield* Scope.close(headScope, Exit.void)
        while (worker.link.status() === "connected") yield* Effect.sleep("10 millis")
        const away = yield* Effect.flip(worker.graph.call("worker/ask-head", {}))
        expect([away.code, away.message]).toEqual(["INTERNAL", "peer head is not connected"])
        const restarted = yield* H.startHead(net, head.port)
        yield* within(restarted.graph.awaitPeer("worker-a"), "the restarted head to import the worker")
        yield* within(worker.graph.awaitPeer("head"), "the worker to re-import the head")
        expect(worker.link.connections()).toBe(2)
        expect(yield* worker.graph.call("worker/ask-head", {})).toBe("hello worker-a, from the head (you are worker-a)")
        expect(yield* H.idle(yield* worker.link.connection)).toEqual({
          requests: 0,
          pending: 0,
          exchanges: 0,
          handlers: 0,
          detached: 0
        })
        expect(worker.graph.running()).toBe(0)
      }).pipe(Effect.scoped))
  })
