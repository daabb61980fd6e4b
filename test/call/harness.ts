/** Shared test harness: two connections over the in-memory transport, and the leak check run after each scenario. */
import { expect } from "@effect/vitest"
import { Chunk, Effect, Option, Scope, Stream, Supervisor, TestClock } from "effect"
import type { TransportError } from "../../src/errors/TransportError.js"
import type { EventEnvelope } from "../../src/schema/Envelope.js"
import * as Connection from "../../src/call/Connection.js"
import * as InMemoryTransport from "../../src/call/InMemoryTransport.js"
import type { HandlerRegistration } from "../../src/services/Operation.js"
import * as OperationRegistry from "../../src/services/OperationRegistry.js"

export interface Pair {
  /** The side that serves `registrations` (and can call back). */
  readonly server: Connection.Connection
  /** The other side (serves `clientRegistrations`). */
  readonly client: Connection.Connection
  readonly transports: readonly [InMemoryTransport.InMemoryTransport, InMemoryTransport.InMemoryTransport]
  /** Asserts nothing is left: no requests, pending entries, exchanges, handlers, detached children, open streams. */
  readonly expectIdle: Effect.Effect<void>
}

export interface PairOptions {
  readonly clientRegistrations?: ReadonlyArray<HandlerRegistration>
  readonly server?: Connection.Options
  readonly client?: Connection.Options
  readonly transport?: InMemoryTransport.Options
}

export const makePair = (
  registrations: ReadonlyArray<HandlerRegistration>,
  options: PairOptions = {}
): Effect.Effect<Pair, never, Scope.Scope> =>
  Effect.gen(function*() {
    const registry = yield* Effect.orDie(OperationRegistry.make(registrations))
    const clientRegistry = yield* Effect.orDie(OperationRegistry.make(options.clientRegistrations ?? []))
    const transports = yield* InMemoryTransport.makePair(options.transport)
    // Every fiber the engine forks (readers, requests, detached children, timers) is tracked from here on.
    const supervisor = yield* Supervisor.track
    const server = yield* Effect.supervised(
      Connection.make(transports[0], { source: registry.source, ...options.server }),
      supervisor
    )
    const client = yield* Effect.supervised(
      Connection.make(transports[1], { source: clientRegistry.source, ...options.client }),
      supervisor
    )
    const liveFibers = Effect.map(
      supervisor.value,
      (fibers) => fibers.filter((fiber) => fiber.unsafePoll() === null).length
    )
    for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
    const perConnection = (yield* liveFibers) / 2
    const idle = Effect.gen(function*() {
      // Let finalizers that were forked (exchange closes, interruptions) settle, and let the deadline timers reach
      // the (cancelled) deadlines they sleep until, after which they end.
      for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
      yield* TestClock.adjust("1 hour")
      for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
      for (const connection of [server, client]) {
        expect(yield* connection.stats).toEqual({ requests: 0, pending: 0, exchanges: 0, handlers: 0, detached: 0 })
      }
      expect(transports[0].liveExchanges()).toBe(0)
      expect(transports[1].liveExchanges()).toBe(0)
      // What stays alive is what lives as long as a connection (its accept loop), as counted when the pair was made.
      // A closed connection has nothing left.
      const open = [server, client].filter((connection) => !connection.isClosed()).length
      expect(yield* liveFibers).toBe(perConnection * open)
    })
    return { server, client, transports, expectIdle: idle }
  })

/** An identity for tests. */
export const who = (id: string, scopes: ReadonlyArray<string> = [], resources: Record<string, ReadonlyArray<string>> = {}) =>
  Option.some({ id, scopes, resources })

/** Play a raw peer: open an exchange, write these envelopes, collect everything the other side writes until it ends. */
export const raw = (
  transport: InMemoryTransport.InMemoryTransport,
  envelopes: ReadonlyArray<EventEnvelope>
): Effect.Effect<Array<EventEnvelope>, TransportError> =>
  Effect.acquireUseRelease(
    transport.open,
    (exchange) =>
      Effect.zipRight(
        Effect.forEach(envelopes, exchange.send, { discard: true }),
        Effect.map(Stream.runCollect(exchange.receive), Chunk.toArray)
      ),
    (exchange) => exchange.close
  )

/** A `call.requested` envelope. */
export const request = (id: string, payload: Record<string, unknown>): EventEnvelope => ({
  type: "call.requested",
  id,
  payload
})

/** The single answer of a raw call. */
export const rawCall = (transport: InMemoryTransport.InMemoryTransport, payload: Record<string, unknown>) =>
  Effect.map(raw(transport, [request("r-1", payload)]), (answers) => {
    expect(answers.length).toBe(1)
    return answers[0]!
  })
