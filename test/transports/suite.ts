/**
 * The shared transport suite: the call protocol over a real network transport on 127.0.0.1, port 0.
 * `transports.test.ts` runs it over QUIC and over WebSocket (wss).
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Deferred, Effect, Exit, Fiber, Option, Redacted, Schema, Scope, Stream } from "effect"
import type * as Connection from "../../src/call/Connection.js"
import type { CallError } from "../../src/errors/CallError.js"
import * as CallClient from "../../src/layers/Client.js"
import * as CallProtocol from "../../src/services/CallProtocol.js"
import * as Operation from "../../src/services/Operation.js"
import * as OperationRegistry from "../../src/services/OperationRegistry.js"
import * as Tls from "../../src/services/Tls.js"

/** What a transport gives the suite: a server on 127.0.0.1:0 serving the call protocol. */
export interface Net {
  readonly name: string
  readonly listen: (
    identity: Tls.TlsIdentity,
    options: CallProtocol.ServeOptions,
    extra?: { readonly drainTimeout?: number; readonly maxFrameBytes?: number }
  ) => Effect.Effect<{ readonly url: string; readonly fingerprint: string }, unknown, Scope.Scope>
  /** Transport-specific garbage a peer may send; each must cut that peer off and leave the node serving. */
  readonly garbage: ReadonlyArray<{
    readonly name: string
    readonly send: (url: string, fingerprint: string) => Effect.Effect<void, unknown, Scope.Scope>
  }>
}

const seed = (byte: number) => new Uint8Array(32).fill(byte)
export const serverSeed = seed(1)
export const clientSeed = seed(2)
const fingerprintOf = (s: Uint8Array) => Tls.ed25519Fingerprint(Tls.ed25519PublicKey(s))

/** The server's operations, with probes the tests read. */
const makeServer = Effect.gen(function*() {
  const started = yield* Deferred.make<void>()
  const interrupted = yield* Deferred.make<void>()
  const release = yield* Deferred.make<void>()
  const serverSide = yield* Deferred.make<Connection.Connection>()
  const echo = Operation.query({
    name: "test/echo",
    input: Schema.Unknown,
    output: Schema.Unknown,
    handler: (input) => Effect.succeed(input)
  })
  const whoami = Operation.query({
    name: "test/whoami",
    input: Schema.Unknown,
    output: Schema.NullOr(Schema.String),
    handler: (_, ctx) => Effect.succeed(Option.getOrNull(Option.map(ctx.identity, (i) => i.id)))
  })
  const count = Operation.subscription({
    name: "test/count",
    input: Schema.Struct({ n: Schema.Int }),
    output: Schema.Struct({ i: Schema.Int }),
    handler: ({ n }) => Stream.map(Stream.range(0, n - 1), (i) => ({ i }))
  })
  const hang = Operation.query({
    name: "test/hang",
    input: Schema.Unknown,
    output: Schema.Null,
    handler: () =>
      Deferred.succeed(started, undefined).pipe(
        Effect.zipRight(Effect.never),
        Effect.onInterrupt(() => Deferred.succeed(interrupted, undefined))
      )
  })
  const slow = Operation.query({
    name: "test/slow",
    input: Schema.Unknown,
    output: Schema.String,
    handler: () => Effect.zipRight(Deferred.succeed(started, undefined), Effect.as(Deferred.await(release), "finished"))
  })
  let produced = 0
  const flood = Operation.subscription({
    name: "test/flood",
    input: Schema.Struct({ n: Schema.Int }),
    output: Schema.Struct({ i: Schema.Int, pad: Schema.String }),
    handler: ({ n }) =>
      Stream.map(Stream.range(0, n - 1), (i) => {
        produced = i + 1
        return { i, pad: "p".repeat(16 * 1024) }
      }).pipe(Stream.rechunk(1))
  })
  const registry = yield* Effect.orDie(OperationRegistry.make([echo, whoami, count, hang, slow, flood]))
  const authenticator: CallProtocol.Authenticator = {
    resolveFingerprint: (fp) => Effect.succeed(Option.some({ id: `fp:${fp.slice(0, 16)}`, scopes: [], resources: {} })),
    resolveToken: (token) =>
      Effect.succeed(
        Redacted.value(token) === "good-token" ? Option.some({ id: "token-user", scopes: [], resources: {} }) : Option.none()
      )
  }
  const options: CallProtocol.ServeOptions = {
    source: registry.source,
    authenticator,
    onConnection: (connection) => Effect.asVoid(Deferred.succeed(serverSide, connection))
  }
  return { options, started, interrupted, release, serverSide, produced: () => produced }
})

/** The client's own operation, which the server calls back over the same connection. */
const clientOps = Effect.map(
  Effect.orDie(OperationRegistry.make([
    Operation.query({
      name: "client/name",
      input: Schema.Unknown,
      output: Schema.String,
      handler: () => Effect.succeed("the client")
    })
  ])),
  (registry) => registry.source
)

const expectIdle = (connection: Connection.Connection) =>
  Effect.gen(function*() {
    for (let i = 0; i < 50; i++) {
      const stats = yield* connection.stats
      if (Object.values(stats).every((n) => n === 0)) return
      yield* Effect.sleep("10 millis")
    }
    expect(yield* connection.stats).toEqual({ requests: 0, pending: 0, exchanges: 0, handlers: 0, detached: 0 })
  })

export const transportSuite = (net: Net) =>
  describe(`call protocol over ${net.name}`, () => {
    const setup = Effect.gen(function*() {
      const server = yield* makeServer
      const listening = yield* net.listen(Tls.RawKey(serverSeed), server.options)
      const connect = (credentials: CallClient.Credentials = {}) =>
        Effect.flatMap(clientOps, (source) =>
          CallClient.connect(
            listening.url,
            { identity: Tls.RawKey(clientSeed), expectedFingerprint: listening.fingerprint, ...credentials },
            { source }
          ))
      return { server, listening, connect }
    })

    it.live("calls in both directions on one connection, concurrently", () =>
      Effect.scoped(Effect.gen(function*() {
        const { connect, server } = yield* setup
        const client = yield* connect()
        const outbound = Effect.forEach(
          Array.from({ length: 20 }, (_, i) => i),
          (i) => client.call("test/echo", { i }),
          { concurrency: 8 }
        )
        const inbound = Effect.flatMap(Deferred.await(server.serverSide), (back) =>
          Effect.forEach(Array.from({ length: 20 }), () => back.call("client/name", {}), { concurrency: 8 }))
        const [out, back] = yield* Effect.all([outbound, inbound], { concurrency: 2 })
        expect(out).toEqual(Array.from({ length: 20 }, (_, i) => ({ i })))
        expect(new Set(back)).toEqual(new Set(["the client"]))
        yield* expectIdle(client)
        yield* expectIdle(yield* Deferred.await(server.serverSide))
      })))

    it.live("a subscription delivers every item in order, then completes", () =>
      Effect.scoped(Effect.gen(function*() {
        const { connect } = yield* setup
        const client = yield* connect()
        const items = yield* Stream.runCollect(client.subscribe("test/count", { n: 500 }))
        expect(Chunk.toArray(items)).toEqual(Array.from({ length: 500 }, (_, i) => ({ i })))
        yield* expectIdle(client)
      })))

    it.live("a slow subscriber holds the producer back: it stalls well short of the end, nothing is lost", () =>
      Effect.scoped(Effect.gen(function*() {
        const { connect, server } = yield* setup
        const client = yield* connect()
        const total = 100_000
        const pull = yield* Stream.toPull(client.subscribe("test/flood", { n: total }))
        const first = yield* pull
        expect(Chunk.toArray(first)[0]).toMatchObject({ i: 0 })
        // Wait until the producer stops moving (the transport's flow control holds it), then check where it stopped.
        let last = -1
        for (let i = 0; i < 100 && server.produced() !== last; i++) {
          last = server.produced()
          yield* Effect.sleep("200 millis")
        }
        expect(server.produced()).toBe(last)
        expect(last).toBeLessThan(total / 4)
        // What was held back arrives complete and in order.
        let next = Chunk.size(first)
        while (next < 300) {
          for (const item of Chunk.toArray(yield* pull)) expect((item as { i: number }).i).toBe(next++)
        }
      })), 120_000)

    it.live("interrupting a call aborts the handler on the other node", () =>
      Effect.scoped(Effect.gen(function*() {
        const { connect, server } = yield* setup
        const client = yield* connect()
        const fiber = yield* Effect.fork(client.call("test/hang", {}))
        yield* Deferred.await(server.started)
        yield* Fiber.interrupt(fiber)
        yield* Deferred.await(server.interrupted)
        yield* expectIdle(client)
        yield* expectIdle(yield* Deferred.await(server.serverSide))
      })))

    it.live("a call past its deadline fails with TIMEOUT and the handler is interrupted", () =>
      Effect.scoped(Effect.gen(function*() {
        const { connect, server } = yield* setup
        const client = yield* connect()
        const error = yield* Effect.flip(client.call("test/hang", {}, { timeout: "150 millis" }))
        expect(error.code).toBe("TIMEOUT")
        expect(error.retryable).toBe(true)
        yield* Deferred.await(server.interrupted)
        yield* expectIdle(client)
      })))

    it.live("fingerprints: a RawKey identity is ed25519:<public key hex>, seen by both sides", () =>
      Effect.scoped(Effect.gen(function*() {
        const { connect, listening } = yield* setup
        expect(listening.fingerprint).toBe(fingerprintOf(serverSeed))
        const client = yield* connect()
        expect(client.peerFingerprint).toEqual(Option.some(fingerprintOf(serverSeed)))
        expect(yield* client.call("test/whoami", {})).toBe(`fp:${fingerprintOf(clientSeed).slice(0, 16)}`)
      })))

    it.live("a pinned fingerprint that does not match fails; an unknown Ed25519 server fails closed", () =>
      Effect.scoped(Effect.gen(function*() {
        const { listening } = yield* setup
        const mismatch = yield* Effect.flip(
          CallClient.connect(listening.url, { expectedFingerprint: fingerprintOf(seed(9)) })
        )
        expect(mismatch.reason).toBe("FingerprintMismatch")
        const unknown = yield* Effect.flip(CallClient.connect(listening.url, {}))
        expect(unknown.reason).toBe("Untrusted")
      })))

    it.live("a bearer token on a request changes the identity for that request only", () =>
      Effect.scoped(Effect.gen(function*() {
        const { connect } = yield* setup
        const client = yield* connect()
        const byFingerprint = `fp:${fingerprintOf(clientSeed).slice(0, 16)}`
        expect(yield* client.call("test/whoami", {}, { authToken: Redacted.make("good-token") })).toBe("token-user")
        expect(yield* client.call("test/whoami", {})).toBe(byFingerprint)
        // An invalid token falls back to the connection identity.
        expect(yield* client.call("test/whoami", {}, { authToken: Redacted.make("bad-token") })).toBe(byFingerprint)
      })))

    it.live("a dropped connection fails pending calls with 'connection closed' and leaves nothing behind", () =>
      Effect.scoped(Effect.gen(function*() {
        const { connect, server } = yield* setup
        const client = yield* connect()
        const fiber = yield* Effect.fork(client.call("test/hang", {}))
        yield* Deferred.await(server.started)
        const serverSide = yield* Deferred.await(server.serverSide)
        yield* serverSide.close
        const exit = yield* Fiber.await(fiber).pipe(Effect.timeout("5 seconds"))
        expect(Exit.isFailure(exit)).toBe(true)
        const error = yield* Effect.flip(Fiber.join(fiber))
        expect((error as CallError).code).toBe("INTERNAL")
        expect((error as CallError).message).toBe("connection closed")
        yield* Deferred.await(server.interrupted)
        yield* client.closed.pipe(Effect.timeout("5 seconds"))
        yield* expectIdle(client)
      })))

    for (const garbage of net.garbage) {
      it.live(`a peer sending ${garbage.name} is cut off while the node keeps serving others`, () =>
        Effect.scoped(Effect.gen(function*() {
          const { connect, listening } = yield* setup
          const other = yield* connect()
          yield* garbage.send(listening.url, listening.fingerprint)
          expect(yield* other.call("test/echo", "still here")).toBe("still here")
          const fresh = yield* connect()
          expect(yield* fresh.call("test/echo", "new")).toBe("new")
        })))
    }

    it.live("closing the server lets an in-flight call finish (drain)", () =>
      Effect.gen(function*() {
        const server = yield* makeServer
        const serverScope = yield* Scope.make()
        const listening = yield* Scope.extend(
          net.listen(Tls.RawKey(serverSeed), server.options, { drainTimeout: 5000 }),
          serverScope
        )
        const client = yield* CallClient.connect(listening.url, { expectedFingerprint: listening.fingerprint })
        const call = yield* Effect.fork(client.call("test/slow", {}))
        yield* Deferred.await(server.started)
        const closing = yield* Effect.fork(Scope.close(serverScope, Exit.void))
        yield* Effect.sleep("50 millis")
        yield* Deferred.succeed(server.release, undefined)
        expect(yield* Fiber.join(call)).toBe("finished")
        yield* Fiber.join(closing)
      }).pipe(Effect.scoped))
  })
