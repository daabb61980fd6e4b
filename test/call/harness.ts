/** Shared test harness: two connections over the in-memory transport, and the leak check run after each scenario. */
import { expect } from "@effect/vitest"
import { Chunk, Effect, Option, Scope, Stream, Supervisor, TestClock } from "effect"
import type { TransportError } from "../../src/errors/TransportError.js"
import type { EventEnvelope } from "../../src/schema/Envelope.js"
import * as Codec from "../../src/call/Codec.js"
import * as Connection from "../../src/call/Connection.js"
import * as InMemoryTransport from "../../src/call/InMemoryTransport.js"
import type { BidiStream } from "../../src/services/Endpoint.js"
import type { HandlerRegistration } from "../../src/services/Operation.js"
import * as CallProtocol from "../../src/services/CallProtocol.js"
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

/** Engine options, plus the protocol's identity policy (`CallProtocol.identify`) written out. */
export type SideOptions = Connection.Options & CallProtocol.IdentifyOptions

export interface PairOptions {
  readonly clientRegistrations?: ReadonlyArray<HandlerRegistration>
  readonly server?: SideOptions
  readonly client?: SideOptions
  readonly transport?: InMemoryTransport.Options
}

/** Engine options for one side: the identity policy options become its `identify`. */
export const engineOptions = (options: SideOptions = {}): Connection.Options => {
  const { identity, maxAuthAttempts, onAuthFailure, resolveToken, ...engine } = options
  return identity === undefined && resolveToken === undefined
    ? engine
    : {
      ...engine,
      identify: CallProtocol.identify({
        ...(identity === undefined ? {} : { identity }),
        ...(resolveToken === undefined ? {} : { resolveToken }),
        ...(maxAuthAttempts === undefined ? {} : { maxAuthAttempts }),
        ...(onAuthFailure === undefined ? {} : { onAuthFailure })
      })
    }
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
      Connection.make(transports[0], { source: registry.source, ...engineOptions(options.server) }),
      supervisor
    )
    const client = yield* Effect.supervised(
      Connection.make(transports[1], { source: clientRegistry.source, ...engineOptions(options.client) }),
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

/** A raw stream on the in-memory connection: frames written and read by hand, with no engine on this end. */
export interface RawStream {
  readonly send: (envelope: EventEnvelope) => Effect.Effect<void, TransportError>
  readonly sendBytes: (bytes: Uint8Array) => Effect.Effect<void, TransportError>
  /** Everything the other side writes until it finishes the stream. */
  readonly receive: Stream.Stream<EventEnvelope, TransportError>
  readonly end: Effect.Effect<void>
  readonly close: Effect.Effect<void>
}

const rawStream = (stream: BidiStream): RawStream => {
  const decoder = new Codec.FrameDecoder()
  return {
    send: (envelope) => stream.write(Codec.encodeFrame(envelope)),
    sendBytes: stream.write,
    receive: Stream.mapConcat(stream.readable, (chunk) => decoder.push(chunk)),
    end: stream.end,
    close: stream.reset
  }
}

/** Open a raw stream to the other side (it is served by the other side's engine). */
export const openRaw = (transport: InMemoryTransport.InMemoryTransport): Effect.Effect<RawStream, TransportError> =>
  Effect.map(transport.connection.openBidi, rawStream)

/** The streams the other side opens to this end, raw (for an end that runs no engine). */
export const acceptRaw = (transport: InMemoryTransport.InMemoryTransport): Stream.Stream<RawStream> =>
  Stream.repeatEffectOption(
    Effect.mapBoth(transport.connection.acceptBidi, { onFailure: () => Option.none(), onSuccess: rawStream })
  )

/** Play a raw peer: open a stream, write these envelopes, collect everything the other side writes until it ends. */
export const raw = (
  transport: InMemoryTransport.InMemoryTransport,
  envelopes: ReadonlyArray<EventEnvelope>
): Effect.Effect<Array<EventEnvelope>, TransportError> =>
  Effect.acquireUseRelease(
    openRaw(transport),
    (exchange) =>
      Effect.zipRight(
        Effect.forEach(envelopes, exchange.send, { discard: true }),
        Effect.map(Stream.runCollect(exchange.receive), Chunk.toArray)
      ),
    (exchange) => Effect.zipRight(exchange.end, exchange.close)
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
