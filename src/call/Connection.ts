/**
 * A call-protocol connection over any `CallTransport` (SPEC §4–§8), symmetric: the same object serves the peer's
 * calls (dispatching them to `source`) and makes outgoing `call` / `subscribe` calls to the peer.
 *
 * Identity hooks (SPEC §5 step 2, §10–§11), so an `IdentityProvider` wires in unchanged:
 * - `identity`: the connection's identity, evaluated for every request (so a peer entry changed while the connection
 *   is up applies to its next request): e.g. `provider.resolveFingerprint(fp)`, or a fixed `Option`.
 * - `resolveToken`: a request's `auth_token` (as `Redacted`) → identity; `Some` replaces the connection identity for
 *   that request only, `None` falls back to it and counts as a failed attempt.
 * - `maxAuthAttempts` (dynamic config, default 5): after that many failed token resolutions the connection is closed.
 *
 * Correlation is by `id` only (see `Transport.ts`): every envelope read from any exchange is routed by its type and id.
 * Each exchange is read by its own fiber (no head-of-line blocking between calls). A subscription's items go through a
 * bounded buffer (`subscriptionBuffer` reads, default 16): when it is full, the reader stops reading that exchange and the
 * transport's flow control slows the producer — items are never dropped and never buffered without bound.
 *
 * Closing (the scope, `close`, the peer, or the transport) interrupts every in-flight call and fails every pending
 * outbound call with INTERNAL "connection closed". Interrupting an outgoing call (or a subscription consumer that
 * stops early) sends `call.aborted` for it.
 */
import { Cause, Chunk, Clock, Deferred, Duration, Effect, Exit, FiberId, FiberMap, FiberSet, Option, Queue, Redacted, Stream, Take } from "effect"
import type { Scope } from "effect"
import * as CallError from "../errors/CallError.js"
import type { TransportError } from "../errors/TransportError.js"
import type { EventEnvelope } from "../schema/Envelope.js"
import type { Identity } from "../schema/Identity.js"
import * as Operation from "../services/Operation.js"
import * as Deadlines from "./Deadlines.js"
import * as Discovery from "./Discovery.js"
import * as Dispatcher from "./Dispatcher.js"
import type { OperationSource } from "./Dispatcher.js"
import type { CallTransport, Exchange } from "./Transport.js"

export interface Options {
  /** The operations this side serves (default: only the discovery operations). */
  readonly source?: OperationSource
  /** Extend every handler's `ctx.env` (the peer graph's seam; see `Dispatcher.Options.extendEnv`). */
  readonly extendEnv?: Dispatcher.Options["extendEnv"]
  /** The connection's identity, evaluated per request (default: none). */
  readonly identity?: Option.Option<Identity> | Effect.Effect<Option.Option<Identity>>
  /** Resolve a request's bearer token (default: tokens are ignored). */
  readonly resolveToken?: (token: Redacted.Redacted<string>) => Effect.Effect<Option.Option<Identity>>
  /** Failed token resolutions before the connection is closed (default 5; an Effect is read on every failure). */
  readonly maxAuthAttempts?: number | Effect.Effect<number>
  /** Deadline of incoming root queries/mutations that carry no `timeout_ms` (default 30 s). */
  readonly defaultTimeout?: Duration.DurationInput
  /**
   * Reads buffered per outgoing subscription before reading its exchange stops (default 16). A read holds the items
   * one transport read delivered, so the buffer is bounded in bytes by this × the transport's read size.
   */
  readonly subscriptionBuffer?: number
  /** Bearer token sent as `auth_token` on every outgoing call (a call's own `authToken` wins). */
  readonly authToken?: Redacted.Redacted<string>
}

export interface CallOptions {
  /** Caller-side deadline: TIMEOUT after it (and `call.aborted` is sent); also sent as `timeout_ms`. */
  readonly timeout?: Duration.DurationInput
  /** Bearer token for this call only. */
  readonly authToken?: Redacted.Redacted<string>
  /** Who this call is made on behalf of (audit only; the callee's access control never reads it). */
  readonly forwardedFor?: Identity
}

export interface Stats {
  /** Incoming calls being served. */
  readonly requests: number
  /** Outgoing calls waiting for their answer. */
  readonly pending: number
  /** Accepted exchanges still being read. */
  readonly exchanges: number
  /** Handlers running (root and composed). */
  readonly handlers: number
  /** `ContinueRunning` children still running. */
  readonly detached: number
}

export interface Connection {
  /** Call a query or mutation of the peer; input and output in wire (JSON) form. */
  readonly call: (operation: string, input: unknown, options?: CallOptions) => Effect.Effect<unknown, CallError.CallError>
  /** Subscribe to a subscription of the peer; stopping early sends `call.aborted`. */
  readonly subscribe: (
    operation: string,
    input: unknown,
    options?: CallOptions
  ) => Stream.Stream<unknown, CallError.CallError>
  /** Close the connection (idempotent); resolves when everything it ran has stopped. */
  readonly close: Effect.Effect<void>
  /** Resolves when the connection has closed (by either side). */
  readonly closed: Effect.Effect<void>
  readonly isClosed: () => boolean
  /** Live counts, for leak checks: all zero when nothing is in flight. */
  readonly stats: Effect.Effect<Stats>
  readonly dispatcher: Dispatcher.Dispatcher
}

/** The pending side of an outgoing call: what to do with the envelopes correlated to it. */
interface Pending {
  done: boolean
  /** The exchange the call was made on (its answer normally comes back on it). */
  exchange: Exchange | undefined
  /**
   * A unary call is settled by the shutdown directly; a subscription is not (its buffer may be full): its reader sees
   * the exchange fail when the transport closes and delivers the failure after the buffered items.
   */
  readonly unary: boolean
  /** One or more `call.responded` outputs, in order (consecutive items of one read are delivered together). */
  readonly responded: (outputs: ReadonlyArray<unknown>) => Effect.Effect<void>
  readonly failed: (error: CallError.CallError) => Effect.Effect<void>
  readonly completed: () => Effect.Effect<void>
}

/** Per accepted exchange: the requests that arrived on it. */
interface ExchangeState {
  readonly ids: Set<string>
  /** The reader is routing a read: requests it starts are not yet all in `ids`. */
  routing: boolean
  /** At least one request arrived on this exchange. */
  served: boolean
  finished: boolean
}

const emptySource = Discovery.withDiscovery({ lookup: () => undefined, list: () => [] })

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

/** `forwarded_for` off the wire: a malformed one is ignored (SPEC §5 step 3). */
const parseForwardedFor = (u: unknown): Option.Option<Identity> => {
  if (!isObject(u) || typeof u.id !== "string" || !Array.isArray(u.scopes) || !isObject(u.resources)) {
    return Option.none()
  }
  if (!u.scopes.every((s) => typeof s === "string")) return Option.none()
  for (const actions of Object.values(u.resources)) {
    if (!Array.isArray(actions) || !actions.every((a) => typeof a === "string")) return Option.none()
  }
  return Option.some({ id: u.id, scopes: u.scopes, resources: u.resources as Identity["resources"] })
}

const closedError = CallError.connectionClosed

export const make = (transport: CallTransport, options: Options = {}): Effect.Effect<Connection, never, Scope.Scope> =>
  Effect.gen(function*() {
    const dispatcher = yield* Dispatcher.make({
      source: options.source ?? emptySource,
      ...(options.defaultTimeout === undefined ? {} : { defaultTimeout: options.defaultTimeout }),
      ...(options.extendEnv === undefined ? {} : { extendEnv: options.extendEnv })
    })
    const deadlines = yield* Deadlines.make
    const requests = yield* FiberMap.make<string, void, never>()
    const exchanges = yield* FiberSet.make<void, never>()
    const pending = new Map<string, Pending>()
    const closedSignal = yield* Deferred.make<void>()
    const subscriptionBuffer = Math.max(1, options.subscriptionBuffer ?? 16)
    const connectionIdentity: Effect.Effect<Option.Option<Identity>> = options.identity === undefined
      ? Effect.succeed(Option.none())
      : Option.isOption(options.identity)
      ? Effect.succeed(options.identity)
      : options.identity
    const maxAuthAttempts: Effect.Effect<number> = typeof options.maxAuthAttempts === "number"
      ? Effect.succeed(options.maxAuthAttempts)
      : options.maxAuthAttempts ?? Effect.succeed(5)
    let closed = false
    let authFailures = 0

    // ---------------------------------------------------------------------------------------------------------
    // Shutdown

    const shutdown = Effect.suspend(() => {
      if (closed) return Deferred.await(closedSignal)
      closed = true
      const waiting = [...pending.values()]
      return Effect.forEach(waiting, (entry) => entry.done || !entry.unary ? Effect.void : entry.failed(closedError()), {
        discard: true
      }).pipe(
        Effect.zipRight(transport.close),
        Effect.zipRight(FiberSet.clear(exchanges)),
        Effect.zipRight(FiberMap.clear(requests)),
        Effect.zipRight(Deferred.succeed(closedSignal, undefined))
      )
    })
    yield* Effect.addFinalizer(() => shutdown)

    // ---------------------------------------------------------------------------------------------------------
    // Routing: every envelope, whatever exchange it came on, by type and id.

    /**
     * Route the envelopes of one read. Consecutive `call.responded` of one id are grouped, so a subscription's items
     * cross the consumer's bounded buffer one read at a time instead of one item at a time.
     */
    const routeChunk = (
      envelopes: Chunk.Chunk<EventEnvelope>,
      exchange: Exchange,
      state: ExchangeState
    ): Effect.Effect<void> => {
      if (envelopes.length === 1) return route(Chunk.unsafeHead(envelopes), exchange, state)
      const steps: Array<Effect.Effect<void>> = []
      let batch: Array<unknown> | undefined
      let batchId = ""
      const flush = () => {
        if (batch === undefined) return
        const outputs = batch
        const id = batchId
        batch = undefined
        steps.push(Effect.suspend(() => respond(id, outputs, exchange)))
      }
      for (const envelope of envelopes) {
        if (envelope.type === "call.responded") {
          if (batch !== undefined && batchId === envelope.id) {
            batch.push(envelope.payload.output ?? null)
            continue
          }
          flush()
          batch = [envelope.payload.output ?? null]
          batchId = envelope.id
          continue
        }
        flush()
        steps.push(Effect.suspend(() => route(envelope, exchange, state)))
      }
      flush()
      return Effect.forEach(steps, (step) => step, { discard: true })
    }

    const respond = (id: string, outputs: ReadonlyArray<unknown>, via: Exchange): Effect.Effect<void> => {
      const entry = pending.get(id)
      return entry === undefined || entry.done ? Effect.void : settled(entry, via, entry.responded(outputs))
    }

    /**
     * After routing to an entry: if that finished it with an envelope that came on another exchange (a peer may answer
     * anywhere; correlation is by id), close the call's own exchange so the caller stops waiting on it.
     */
    const settled = (entry: Pending, via: Exchange, effect: Effect.Effect<void>): Effect.Effect<void> =>
      Effect.zipRight(
        effect,
        Effect.suspend(() =>
          entry.done && entry.exchange !== undefined && entry.exchange !== via ? entry.exchange.close : Effect.void
        )
      )

    const route = (envelope: EventEnvelope, exchange: Exchange, state: ExchangeState): Effect.Effect<void> => {
      switch (envelope.type) {
        case "call.requested":
          return startRequest(envelope, exchange, state)
        case "call.aborted": {
          const fiber = FiberMap.unsafeGet(requests, envelope.id)
          if (Option.isSome(fiber)) {
            // signal only: the reader goes on at once, and the request leaves the map when its fiber is done
            return Effect.sync(() => fiber.value.unsafeInterruptAsFork(FiberId.none))
          }
          const entry = pending.get(envelope.id)
          return entry === undefined || entry.done
            ? Effect.void
            : settled(entry, exchange, entry.failed(CallError.internal("request aborted by peer")))
        }
        case "call.responded":
          return respond(envelope.id, [envelope.payload.output ?? null], exchange)
        case "call.error": {
          const entry = pending.get(envelope.id)
          return entry === undefined || entry.done
            ? Effect.void
            : settled(entry, exchange, entry.failed(CallError.fromPayload(envelope.payload)))
        }
        case "call.completed": {
          const entry = pending.get(envelope.id)
          return entry === undefined || entry.done ? Effect.void : settled(entry, exchange, entry.completed())
        }
        default:
          return Effect.void
      }
    }

    // ---------------------------------------------------------------------------------------------------------
    // Serving: incoming exchanges and the requests on them.

    const finishExchange = (exchange: Exchange, state: ExchangeState) =>
      Effect.suspend(() => {
        if (state.finished) return Effect.void
        state.finished = true
        return Effect.zipRight(exchange.end, exchange.close)
      })

    const serveExchange = (exchange: Exchange): Effect.Effect<void> => {
      const state: ExchangeState = { ids: new Set(), routing: false, served: false, finished: false }
      return exchange.receive.pipe(
        Stream.runForEachChunk((envelopes) => {
          state.routing = true
          return Effect.zipRight(
            routeChunk(envelopes, exchange, state),
            Effect.suspend(() => {
              state.routing = false
              // every request of this read may already have finished
              return state.ids.size === 0 && state.served ? finishExchange(exchange, state) : Effect.void
            })
          )
        }),
        Effect.exit,
        Effect.flatMap((exit) => {
          // A reset or invalid frame: the requests on this exchange lost their caller.
          const abandoned = Exit.isFailure(exit) ? [...state.ids] : []
          return Effect.zipRight(
            Effect.forEach(abandoned, (id) => FiberMap.remove(requests, id), { discard: true }),
            state.ids.size === 0 || Exit.isFailure(exit) ? finishExchange(exchange, state) : Effect.void
          )
        }),
        Effect.onInterrupt(() => exchange.close)
      )
    }

    const resolveIdentity = (token: unknown): Effect.Effect<Option.Option<Identity>> => {
      if (typeof token !== "string" || options.resolveToken === undefined) return connectionIdentity
      return Effect.flatMap(options.resolveToken(Redacted.make(token)), (resolved) => {
        if (Option.isSome(resolved)) return Effect.succeed(resolved)
        authFailures++
        return Effect.flatMap(maxAuthAttempts, (max) =>
          authFailures >= max
            ? Effect.zipRight(transport.close, Effect.interrupt)
            : connectionIdentity)
      })
    }

    const send = (exchange: Exchange, envelope: EventEnvelope) => exchange.send(envelope)

    const sendError = (exchange: Exchange, id: string, error: CallError.CallError) =>
      send(exchange, { type: "call.error", id, payload: error.toPayload() })

    /**
     * Send outputs (one, or a chunk of subscription items); one that cannot be encoded (not JSON, too large) becomes
     * INTERNAL for the caller and stops the call.
     */
    const sendOutputs = (exchange: Exchange, id: string, outputs: Iterable<unknown>) =>
      Effect.catchIf(
        Effect.forEach(outputs, (output) => send(exchange, { type: "call.responded", id, payload: { output } }), {
          discard: true
        }),
        (e) => e.reason === "InvalidFrame",
        (e) =>
          Effect.zipRight(
            Effect.logError(`cannot send the output of request ${id}: ${e.message}`),
            Effect.zipRight(sendError(exchange, id, CallError.internal("internal error")), Effect.interrupt)
          )
      )

    const handleRequest = (envelope: EventEnvelope, exchange: Exchange): Effect.Effect<void, TransportError> => {
      const { id, payload } = envelope
      if (typeof payload.operationId !== "string") {
        return sendError(exchange, id, CallError.invalidInput("missing required field: operationId"))
      }
      const operation = payload.operationId
      const timeoutMs = payload.timeout_ms
      return resolveIdentity(payload.auth_token).pipe(
        Effect.flatMap((identity) =>
          dispatcher.prepare({
            requestId: id,
            operation,
            input: payload.input,
            identity,
            forwardedFor: parseForwardedFor(payload.forwarded_for),
            timeout: typeof timeoutMs === "number" && Number.isFinite(timeoutMs) && timeoutMs >= 0
              ? Duration.millis(timeoutMs)
              : undefined
          }, "any")
        ),
        Effect.flatMap((prepared) =>
          prepared._tag === "Unary"
            ? serveUnary(prepared, exchange, id)
            : Effect.zipRight(
              Stream.runForEachChunk(prepared.run, (items) => sendOutputs(exchange, id, items)),
              send(exchange, { type: "call.completed", id, payload: {} })
            )
        ),
        Effect.catchAll((error) => error._tag === "CallError" ? sendError(exchange, id, error) : Effect.fail(error))
      )
    }

    /**
     * Run a unary handler in this request's fiber and answer. At the deadline the connection's timer (`Deadlines`, one
     * fiber for all calls) interrupts the request fiber (handler and inline children with it), and the exit handler
     * answers TIMEOUT. `Effect.timeout` would fork two fibers per call to race the handler against a sleep.
     */
    const serveUnary = (
      prepared: Extract<Dispatcher.Prepared, { _tag: "Unary" }>,
      exchange: Exchange,
      id: string
    ): Effect.Effect<void, CallError.CallError | TransportError> => {
      const answer = Effect.flatMap(prepared.handler, (output) => sendOutputs(exchange, id, [output]))
      if (Option.isNone(prepared.deadline)) return answer
      const deadline = prepared.deadline.value
      return Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const remaining = deadline - now
        if (remaining <= 0) return sendError(exchange, id, CallError.timeout())
        return Effect.withFiberRuntime<void, CallError.CallError | TransportError>((self) => {
          let timedOut = false
          const cancel = deadlines.add(deadline, () => {
            timedOut = true
            self.unsafeInterruptAsFork(self.id())
          })
          return Effect.onExit(answer, (exit) => {
            cancel()
            return timedOut && Exit.isInterrupted(exit)
              ? Effect.ignore(sendError(exchange, id, CallError.timeout()))
              : Effect.void
          })
        })
      })
    }

    const startRequest = (envelope: EventEnvelope, exchange: Exchange, state: ExchangeState): Effect.Effect<void> => {
      const id = envelope.id
      if (closed || FiberMap.unsafeHas(requests, id)) return Effect.void // a duplicate id in flight is ignored
      state.ids.add(id)
      state.served = true
      const request = handleRequest(envelope, exchange).pipe(
        Effect.catchAllCause((cause) => {
          if (Cause.isInterruptedOnly(cause)) return Effect.interrupt
          if (Option.isSome(Cause.failureOption(cause))) return Effect.void // a transport error: the caller is gone
          // a defect outside any handler (an identity hook, a source): answer INTERNAL, log the rest here
          return Effect.zipRight(
            Effect.logError(`request ${id} failed with a defect`, cause),
            Effect.ignore(sendError(exchange, id, CallError.internal("internal error")))
          )
        }),
        Effect.ensuring(Effect.suspend(() => {
          state.ids.delete(id)
          // One call per exchange (SPEC §4): after the last answer, finish it (a WebSocket exchange has no FIN to wait
          // for). Requests that arrived in the same read are all served first.
          return state.ids.size === 0 && !state.routing ? finishExchange(exchange, state) : Effect.void
        }))
      )
      return Effect.asVoid(FiberMap.run(requests, id, request, { onlyIfMissing: true }))
    }

    yield* transport.accept.pipe(
      Stream.runForEach((exchange) =>
        closed ? exchange.close : Effect.asVoid(FiberSet.run(exchanges, serveExchange(exchange)))
      ),
      Effect.ignore,
      Effect.zipRight(Effect.forkDaemon(shutdown)),
      Effect.forkScoped
    )

    // ---------------------------------------------------------------------------------------------------------
    // Calling: outgoing calls and subscriptions.

    const requestEnvelope = (id: string, operation: string, input: unknown, callOptions: CallOptions): EventEnvelope => {
      const payload: Record<string, unknown> = {
        operationId: `/${Operation.normalizeName(operation)}`,
        input: input === undefined ? null : input
      }
      const token = callOptions.authToken ?? options.authToken
      if (token !== undefined) payload.auth_token = Redacted.value(token)
      if (callOptions.forwardedFor !== undefined) payload.forwarded_for = callOptions.forwardedFor
      if (callOptions.timeout !== undefined) {
        payload.timeout_ms = Math.max(0, Math.ceil(Duration.toMillis(Duration.decode(callOptions.timeout))))
      }
      return { type: "call.requested", id, payload }
    }

    const outgoingState = (): ExchangeState => ({ ids: new Set(), routing: false, served: false, finished: false })

    /** Read an outgoing call's own exchange, routing every envelope, until its entry is done or the exchange ends. */
    const readOwn = (exchange: Exchange, entry: Pending) => {
      const state = outgoingState()
      return exchange.receive.pipe(
        Stream.chunks,
        // the flag is read after routing: stop as soon as this call's answer arrived (a WebSocket exchange has no FIN)
        Stream.runForEachWhile((envelopes) => Effect.map(routeChunk(envelopes, exchange, state), () => !entry.done)),
        Effect.ignore,
        Effect.zipRight(Effect.suspend(() => entry.done ? Effect.void : entry.failed(closedError())))
      )
    }

    /** Open an exchange and register the entry. */
    const acquireCall = (id: string, entry: Pending) =>
      Effect.suspend(() => {
        if (closed) return Effect.fail(closedError())
        return Effect.map(Effect.mapError(transport.open, closedError), (exchange) => {
          entry.exchange = exchange
          pending.set(id, entry)
          return exchange
        })
      })

    /** Forget the entry; abort the call if it has not finished (interrupted, timed out, consumer gone); close. */
    const releaseCall = (id: string, entry: Pending, exchange: Exchange) =>
      Effect.suspend(() => {
        pending.delete(id)
        const abort = entry.done || closed
          ? Effect.void
          : Effect.ignore(exchange.send({ type: "call.aborted", id, payload: {} }))
        entry.done = true
        return Effect.zipRight(abort, Effect.zipRight(exchange.end, exchange.close))
      })

    const sendRequest = (exchange: Exchange, envelope: EventEnvelope) =>
      Effect.mapError(
        exchange.send(envelope),
        (e) => e.reason === "InvalidFrame" ? CallError.invalidInput(`input cannot be sent: ${e.message}`) : closedError()
      )

    const call = (
      operation: string,
      input: unknown,
      callOptions: CallOptions = {}
    ): Effect.Effect<unknown, CallError.CallError> =>
      Effect.suspend(() => {
        const id = crypto.randomUUID()
        const result = Deferred.unsafeMake<unknown, CallError.CallError>(undefined as never)
        const entry: Pending = {
          done: false,
          exchange: undefined,
          unary: true,
          responded: (outputs) => settle(Deferred.succeed(result, outputs[0])),
          failed: (error) => settle(Deferred.fail(result, error)),
          completed: () => settle(Deferred.fail(result, CallError.internal("call completed without a response")))
        }
        const settle = (effect: Effect.Effect<boolean>) =>
          Effect.suspend(() => {
            entry.done = true
            return Effect.asVoid(effect)
          })
        const run = Effect.acquireUseRelease(
          acquireCall(id, entry),
          (exchange) =>
            sendRequest(exchange, requestEnvelope(id, operation, input, callOptions)).pipe(
              Effect.zipRight(readOwn(exchange, entry)),
              Effect.zipRight(Deferred.await(result))
            ),
          (exchange) => releaseCall(id, entry, exchange)
        )
        return callOptions.timeout === undefined
          ? run
          : Effect.timeoutFail(run, { duration: callOptions.timeout, onTimeout: CallError.timeout })
      })

    const subscribe = (
      operation: string,
      input: unknown,
      callOptions: CallOptions = {}
    ): Stream.Stream<unknown, CallError.CallError> =>
      Stream.unwrapScoped(Effect.gen(function*() {
        const id = crypto.randomUUID()
        const items = yield* Effect.acquireRelease(
          Queue.bounded<Take.Take<unknown, CallError.CallError>>(subscriptionBuffer),
          Queue.shutdown
        )
        const entry: Pending = {
          done: false,
          exchange: undefined,
          unary: false,
          responded: (outputs) => Queue.offer(items, Take.chunk(Chunk.unsafeFromArray(outputs as Array<unknown>))),
          failed: (error) => finish(Take.fail(error)),
          completed: () => finish(Take.end)
        }
        const finish = (take: Take.Take<unknown, CallError.CallError>) =>
          Effect.suspend(() => {
            entry.done = true
            return Queue.offer(items, take)
          })
        const exchange = yield* Effect.acquireRelease(acquireCall(id, entry), (ex) => releaseCall(id, entry, ex))
        yield* sendRequest(exchange, requestEnvelope(id, operation, input, callOptions))
        yield* Effect.forkScoped(readOwn(exchange, entry))
        const stream = Stream.flattenTake(Stream.fromQueue(items))
        return callOptions.timeout === undefined ? stream : Stream.interruptWhen(
          stream,
          Effect.zipRight(Effect.sleep(callOptions.timeout), Effect.fail(CallError.timeout()))
        )
      }))

    return {
      call,
      subscribe,
      close: Effect.zipRight(Effect.forkDaemon(shutdown), Deferred.await(closedSignal)),
      closed: Deferred.await(closedSignal),
      isClosed: () => closed,
      stats: Effect.map(
        Effect.all([FiberMap.size(requests), FiberSet.size(exchanges)]),
        ([requestCount, exchangeCount]): Stats => ({
          requests: requestCount,
          pending: pending.size,
          exchanges: exchangeCount,
          handlers: dispatcher.running(),
          detached: dispatcher.detached()
        })
      ),
      dispatcher
    }
  })
