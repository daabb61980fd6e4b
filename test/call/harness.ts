/** Shared test harness: two connections over the in-memory transport, and the leak check run after each scenario. */
import { expect } from "@effect/vitest"
import { Effect, Option, Scope } from "effect"
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
    const server = yield* Connection.make(transports[0], { source: registry.source, ...options.server })
    const client = yield* Connection.make(transports[1], { source: clientRegistry.source, ...options.client })
    const idle = Effect.gen(function*() {
      // Let finalizers that were forked (exchange closes, interruptions) settle.
      for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
      for (const connection of [server, client]) {
        expect(yield* connection.stats).toEqual({ requests: 0, pending: 0, exchanges: 0, handlers: 0, detached: 0 })
      }
      expect(transports[0].liveExchanges()).toBe(0)
      expect(transports[1].liveExchanges()).toBe(0)
    })
    return { server, client, transports, expectIdle: idle }
  })

/** An identity for tests. */
export const who = (id: string, scopes: ReadonlyArray<string> = [], resources: Record<string, ReadonlyArray<string>> = {}) =>
  Option.some({ id, scopes, resources })
