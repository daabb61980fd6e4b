/**
 * A call-protocol connection over any `CallTransport` (SPEC §4–§8), symmetric: the same object serves the peer's
 * calls (dispatching them to `source`) and makes outgoing `call` / `subscribe` calls to the peer.
 *
 * The engine only routes and runs. The transport pushes every envelope into `receive` (see `Transport.ts`), which
 * routes it by type and id:
 *
 * - `call.requested` starts exactly one fiber (interruptible: `call.aborted` and deadlines interrupt it) that resolves
 *   the caller's identity (`identify`, the protocol handler's policy), dispatches (`Dispatcher.prepare`) and answers
 *   on the channel the request came on;
 * - `call.responded` / `call.error` / `call.completed` settle the pending outgoing call with that id: a unary call
 *   is an `Effect.async` resumed from a Map by id; a subscription has a bounded mailbox, and when it is full the
 *   transport stops reading (that stream, or the socket) until the consumer takes items — nothing is dropped and
 *   nothing is buffered without bound;
 * - `call.aborted` interrupts the served request with that id.
 *
 * A call is done when its final envelope arrives, never when a stream's FIN does. Deadlines of every call on the
 * connection — served requests, outgoing calls with a timeout, composed calls that run detached — are kept by one
 * timer (`Deadlines`). Limits a peer cannot exceed: calls in flight per connection (`maxInFlight`, past it the
 * request is answered `OVERLOADED`, retryable), an optional per-caller admission (`admit`), a cap on the wire's
 * `timeout_ms` (`maxTimeout`), and a deadline for anonymous subscriptions (`anonymousSubscriptionTimeout`).
 *
 * Closing (the scope, `close`, the peer, or the transport) interrupts every served request and fails every pending
 * outgoing call with INTERNAL "connection closed". Interrupting an outgoing call (or a subscription consumer that
 * stops early) sends `call.aborted` for it.
 */
import { Chunk, Data, Deferred, Duration, Effect, Exit, Fiber, FiberId, Option, Redacted, Runtime, Stream } from "effect"
import type { Tracer } from "effect"
import type { Scope } from "effect"
import * as CallError from "../errors/CallError.js"
import type { TransportError } from "../errors/TransportError.js"
import type { EventEnvelope } from "../schema/Envelope.js"
import type { Identity } from "../schema/Identity.js"
import * as Json from "../schema/Json.js"
import * as Operation from "../services/Operation.js"
import * as Deadlines from "./Deadlines.js"
import * as Discovery from "./Discovery.js"
import * as Dispatcher from "./Dispatcher.js"
import type { OperationSource } from "./Dispatcher.js"
import type { CallTransport, Channel } from "./Transport.js"
import * as Served from "../observability/Served.js"
import * as Tracing from "../observability/Tracing.js"

/** Returned by `identify` to refuse the caller and close the connection (e.g. too many bad tokens). */
export class CloseConnection extends Data.TaggedError("CloseConnection")<{ readonly reason: string }> {}

/** Who is calling, per request: the request's `auth_token` (if any) → its identity. */
export type Identify = (
  authToken: Redacted.Redacted<string> | undefined
) => Effect.Effect<Option.Option<Identity>, CloseConnection>

export interface Options {
  /** The operations this side serves (default: only the discovery operations). */
  readonly source?: OperationSource
  /** Extend every handler's `ctx.env` (the peer graph's seam; see `Dispatcher.Options.extendEnv`). */
  readonly extendEnv?: Dispatcher.Options["extendEnv"]
  /** Resolve each request's caller (default: anonymous). `CallProtocol.identify` builds the node's policy. */
  readonly identify?: Identify
  /** Deadline of incoming root queries/mutations that carry no `timeout_ms` (default 30 s). */
  readonly defaultTimeout?: Duration.DurationInput
  /** The largest deadline a peer may ask for with `timeout_ms` (default 10 minutes); larger ones are capped. */
  readonly maxTimeout?: Duration.DurationInput
  /** Deadline of subscriptions served to anonymous callers (default 10 minutes; authenticated ones have none). */
  readonly anonymousSubscriptionTimeout?: Duration.DurationInput
  /** Requests served at once on this connection; past it a request is answered `OVERLOADED` (default 256). */
  readonly maxInFlight?: number
  /**
   * Admit one request of a caller (e.g. a node-wide count per identity): a release function, or `undefined` to refuse
   * it with `OVERLOADED`.
   */
  readonly admit?: (identity: Option.Option<Identity>) => (() => void) | undefined
  /** Items buffered per outgoing subscription before the transport stops reading it (default 256). */
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
  /** Channels (streams) the engine has not released. */
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

/** A request being served. */
interface Served {
  readonly channel: Channel
  fiber: Fiber.RuntimeFiber<void, never> | undefined
  timedOut: boolean
}

/**
 * The items of an outgoing subscription, bounded: a full mailbox makes the transport stop reading.
 *
 * Hot path (a read of one datagram can carry a thousand items): an offer allocates nothing beyond its place in the
 * buffer — a full mailbox answers with the one `waitForSpace` effect it owns — and a waiting consumer is resumed with
 * `pollLater`, which takes the items when the consumer runs, so everything the transport pushed meanwhile (the rest
 * of that read) arrives as one chunk.
 */
class Mailbox {
  private items: Array<unknown> = []
  /** `null` while open; then the end: `None` completed, `Some` failed. */
  private end: Option.Option<CallError.CallError> | null = null
  private taker: ((pulled: Effect.Effect<Chunk.Chunk<unknown>, Option.Option<CallError.CallError>>) => void) | undefined
  private space: Array<() => void> = []

  constructor(private readonly capacity: number) {}

  get ended(): boolean {
    return this.end !== null
  }

  offer(item: unknown): Effect.Effect<void> | undefined {
    if (this.end !== null) return undefined
    this.items.push(item)
    this.wake()
    return this.items.length < this.capacity ? undefined : this.waitForSpace
  }

  /** Resumes once the consumer took the items (or the mailbox ended). */
  private readonly waitForSpace: Effect.Effect<void> = Effect.async<void>((resume) => {
    if (this.items.length < this.capacity || this.end !== null) return resume(Effect.void)
    this.space.push(() => resume(Effect.void))
  })

  finish(error: CallError.CallError | undefined): void {
    if (this.end !== null) return
    this.end = error === undefined ? Option.none() : Option.some(error)
    this.wake()
  }

  /** Stop: release a paused transport; what is buffered is dropped with the subscription. */
  close(): void {
    if (this.end === null) this.end = Option.none()
    this.items = []
    this.release()
  }

  readonly take: Effect.Effect<Chunk.Chunk<unknown>, Option.Option<CallError.CallError>> = Effect.async((resume) => {
    const now = this.poll()
    if (now !== undefined) return resume(now)
    this.taker = resume
    return Effect.sync(() => {
      this.taker = undefined
    })
  })

  /** What a woken consumer runs: the items (or the end) as of when it runs. */
  private readonly pollLater: Effect.Effect<Chunk.Chunk<unknown>, Option.Option<CallError.CallError>> = Effect
    .suspend(() => this.poll() ?? this.take)

  private poll(): Effect.Effect<Chunk.Chunk<unknown>, Option.Option<CallError.CallError>> | undefined {
    if (this.items.length > 0) {
      const chunk = Chunk.unsafeFromArray(this.items)
      this.items = []
      this.release()
      return Effect.succeed(chunk)
    }
    if (this.end !== null) return Effect.fail(this.end)
    return undefined
  }

  private wake(): void {
    const taker = this.taker
    if (taker === undefined) return
    this.taker = undefined
    taker(this.pollLater)
  }

  private release(): void {
    if (this.space.length === 0) return
    const waiting = this.space
    this.space = []
    for (const go of waiting) go()
  }
}

/** An outgoing call waiting for its answer. */
interface Pending {
  readonly id: string
  readonly channel: Channel
  done: boolean
  /** A unary call: resumes the caller (or holds the result until it waits). */
  resume: ((exit: Exit.Exit<unknown, CallError.CallError>) => void) | undefined
  result: Exit.Exit<unknown, CallError.CallError> | undefined
  /** A subscription: its items. */
  readonly mailbox: Mailbox | undefined
  cancelTimer: (() => void) | undefined
}

/** Per channel of a stream transport: what runs on it. */
interface ChannelState {
  readonly served: Set<string>
  call: Pending | undefined
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

const anonymous: Identify = () => Effect.succeed(Option.none())
const millis = (d: Duration.DurationInput) => Duration.toMillis(Duration.decode(d))

export const make = (transport: CallTransport, options: Options = {}): Effect.Effect<Connection, never, Scope.Scope> =>
  Effect.gen(function*() {
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const clock = yield* Effect.clock
    const deadlines = yield* Deadlines.make
    const dispatcher = yield* Dispatcher.make({
      source: options.source ?? emptySource,
      deadlines,
      ...(options.defaultTimeout === undefined ? {} : { defaultTimeout: options.defaultTimeout }),
      ...(options.extendEnv === undefined ? {} : { extendEnv: options.extendEnv })
    })
    const identify = options.identify ?? anonymous
    const maxTimeoutMs = millis(options.maxTimeout ?? "10 minutes")
    const anonymousSubscriptionMs = millis(options.anonymousSubscriptionTimeout ?? "10 minutes")
    const maxInFlight = Math.max(1, options.maxInFlight ?? 256)
    const subscriptionBuffer = Math.max(1, options.subscriptionBuffer ?? 256)
    const perCall = transport.perCall

    const requests = new Map<string, Served>()
    const pending = new Map<string, Pending>()
    const channels = new Map<Channel, ChannelState>()
    const closedSignal = yield* Deferred.make<void>()
    let closed = false
    /** Hostile or broken input is logged once per connection per kind, at warn, without stacks. */
    const warned = new Set<string>()
    const warnOnce = (kind: string, message: string): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (warned.has(kind)) return Effect.void
        warned.add(kind)
        return Effect.logWarning(message)
      })

    const closedError = CallError.connectionClosed

    // ---------------------------------------------------------------------------------------------------------
    // Channels of stream transports: a channel is released when nothing runs on it any more.

    const stateOf = (channel: Channel): ChannelState => {
      let state = channels.get(channel)
      if (state === undefined) {
        state = { served: new Set(), call: undefined }
        channels.set(channel, state)
      }
      return state
    }

    const releaseIfIdle = (channel: Channel, state: ChannelState) => {
      if (state.served.size > 0 || state.call !== undefined) return
      channels.delete(channel)
      channel.close()
    }

    // ---------------------------------------------------------------------------------------------------------
    // Shutdown

    const shutdown = Effect.suspend(() => {
      if (closed) return Deferred.await(closedSignal)
      closed = true
      for (const entry of [...pending.values()]) settle(entry, closedError())
      const fibers: Array<Fiber.RuntimeFiber<void, never>> = []
      for (const served of requests.values()) if (served.fiber !== undefined) fibers.push(served.fiber)
      return transport.close.pipe(
        Effect.zipRight(Fiber.interruptAll(fibers)),
        Effect.zipRight(Effect.sync(() => {
          for (const channel of channels.keys()) channel.reset()
          channels.clear()
        })),
        Effect.zipRight(Deferred.succeed(closedSignal, undefined))
      )
    })
    yield* Effect.addFinalizer(() => shutdown)

    // ---------------------------------------------------------------------------------------------------------
    // Calling side: settle pending calls.

    const settle = (entry: Pending, error: CallError.CallError | undefined, output?: unknown) => {
      if (entry.done) return
      entry.done = true
      pending.delete(entry.id)
      entry.cancelTimer?.()
      if (entry.mailbox !== undefined) {
        entry.mailbox.finish(error)
      } else {
        const exit = error === undefined ? Exit.succeed(output) : Exit.fail(error)
        if (entry.resume !== undefined) entry.resume(exit)
        else entry.result = exit
      }
      if (perCall) {
        const state = channels.get(entry.channel)
        if (state !== undefined && state.call === entry) {
          state.call = undefined
          releaseIfIdle(entry.channel, state)
        }
      }
    }

    // ---------------------------------------------------------------------------------------------------------
    // Serving side.

    const write = (channel: Channel, envelopes: ReadonlyArray<EventEnvelope>) => channel.write(envelopes)
    const errorEnvelope = (id: string, error: CallError.CallError): EventEnvelope => ({
      type: "call.error",
      id,
      payload: error.toPayload()
    })
    const respondedEnvelope = (id: string, output: unknown): EventEnvelope => ({
      type: "call.responded",
      id,
      payload: { output }
    })

    /** Answer a request that is not served (refused before it started): no fiber, nothing kept. */
    const refuse = (channel: Channel, id: string, payload: ReturnType<CallError.CallError["toPayload"]>) => {
      channel.post([{ type: "call.error", id, payload }])
      if (perCall && !channels.has(channel)) channel.close()
    }
    // Refusals are built once per connection: a flood of them costs no allocation beyond its envelopes.
    const overloadedPayload = CallError.overloadedPayload(
      `too many calls in flight on this connection (limit ${maxInFlight}); retry later`
    )

    /** An output that cannot be encoded (not JSON, too large) becomes INTERNAL for the caller and stops the call. */
    const onWriteFailure = (channel: Channel, id: string) => (error: TransportError): Effect.Effect<void> =>
      error.reason !== "InvalidFrame" ? Effect.interrupt : Effect.zipRight(
        Effect.logError(`cannot send the output of request ${CallError.echo(id)}: ${CallError.echo(error.message)}`),
        Effect.zipRight(Effect.ignore(write(channel, [errorEnvelope(id, CallError.internal("internal error"))])), Effect.interrupt)
      )

    /** Run the handler and send what it answers; with tracing on, the span counts the bytes (or items) sent. */
    const answer = (
      prepared: Dispatcher.Prepared,
      channel: Channel,
      id: string,
      span: Tracer.Span | undefined
    ): Effect.Effect<void, CallError.CallError> => {
      if (prepared._tag === "Unary") {
        return Effect.flatMap(prepared.handler, (output) => {
          if (span !== undefined) span.attribute("alknet.response.bytes", Tracing.jsonBytes(output))
          return Effect.catchAll(write(channel, [respondedEnvelope(id, output)]), onWriteFailure(channel, id))
        })
      }
      let sent = 0
      return Effect.zipRight(
        Stream.runForEachChunk(prepared.items, (items) => {
          const envelopes: Array<EventEnvelope> = []
          for (const item of items) envelopes.push(respondedEnvelope(id, item))
          if (span !== undefined) span.attribute("alknet.response.items", (sent += envelopes.length))
          return Effect.catchAll(write(channel, envelopes), onWriteFailure(channel, id))
        }),
        Effect.catchAll(write(channel, [{ type: "call.completed", id, payload: {} }]), () => Effect.interrupt)
      )
    }

    /** Run the request under its deadline: the connection's timer interrupts this fiber, which answers TIMEOUT. */
    const withinDeadline = (
      effect: Effect.Effect<void, CallError.CallError>,
      deadline: Option.Option<number>,
      served: Served,
      channel: Channel,
      id: string,
      outcome: Tracing.Outcome
    ): Effect.Effect<void, CallError.CallError> => {
      if (Option.isNone(deadline)) return effect
      const at = deadline.value
      // the connection's clock (the served fibers' own), read at once: no effect per call for it
      if (at <= clock.unsafeCurrentTimeMillis()) return Effect.fail(CallError.timeout())
      const cancel = deadlines.add(at, () => {
        served.timedOut = true
        served.fiber?.unsafeInterruptAsFork(FiberId.none)
      })
      return Effect.onExit(effect, (exit) => {
        cancel()
        if (!served.timedOut || !Exit.isInterrupted(exit)) return Effect.void
        outcome.code = "TIMEOUT"
        return Effect.ignore(write(channel, [errorEnvelope(id, CallError.timeout())]))
      })
    }

    const serveRequest = (envelope: EventEnvelope, channel: Channel, served: Served): Effect.Effect<void> => {
      const { id, payload } = envelope
      const token = typeof payload.auth_token === "string" ? Redacted.make(payload.auth_token) : undefined
      const timeoutMs = payload.timeout_ms
      const requested = typeof timeoutMs === "number" && Number.isFinite(timeoutMs) && timeoutMs >= 0
        ? Math.min(timeoutMs, maxTimeoutMs)
        : undefined
      const name = typeof payload.operationId === "string" ? Operation.normalizeName(payload.operationId) : undefined
      let release: (() => void) | undefined
      const run = (
        span: Tracer.Span | undefined,
        outcome: Tracing.Outcome
      ): Effect.Effect<void, CallError.CallError | CloseConnection> =>
        name === undefined
          ? Effect.fail(CallError.invalidInput("missing required field: operationId"))
          : Effect.flatMap(identify(token), (identity) => {
            if (span !== undefined) {
              Tracing.caller(span, identity)
              span.attribute("alknet.request.bytes", Tracing.jsonBytes(payload.input))
            }
            if (options.admit !== undefined) {
              release = options.admit(identity)
              if (release === undefined) {
                return Effect.fail(CallError.overloaded("too many calls in flight for this caller; retry later"))
              }
            }
            return Effect.flatMap(
              dispatcher.prepare({
                requestId: id,
                operation: name,
                input: payload.input,
                identity,
                forwardedFor: parseForwardedFor(payload.forwarded_for),
                timeout: requested === undefined ? undefined : Duration.millis(requested)
              }, "any"),
              (prepared) => {
                let deadline = prepared.deadline
                if (prepared._tag === "Streaming" && Option.isNone(deadline) && Option.isNone(identity)) {
                  deadline = Option.some(clock.unsafeCurrentTimeMillis() + anonymousSubscriptionMs)
                }
                return withinDeadline(answer(prepared, channel, id, span), deadline, served, channel, id, outcome)
              }
            )
          })
      const body = ({ outcome, span }: Served.Call) =>
        run(span, outcome).pipe(
          Effect.catchAll((error): Effect.Effect<void> => {
            if (error._tag === "CloseConnection") {
              outcome.code = "CLOSED"
              return Effect.zipRight(warnOnce("auth", `closing the connection: ${error.reason}`), Effect.forkDaemon(shutdown))
            }
            Tracing.failed(outcome, error)
            return Effect.ignore(write(channel, [errorEnvelope(id, error)]))
          }),
          Effect.catchAllDefect((defect) => {
            // a defect outside any handler (an identity hook, a source): answer INTERNAL, log it once here
            Tracing.failed(outcome, CallError.internal("internal error"))
            return Effect.zipRight(
              warnOnce(
                "defect",
                `request ${CallError.echo(id)} failed with a defect: ${CallError.echo(defect instanceof Error ? defect.message : String(defect))}`
              ),
              Effect.ignore(write(channel, [errorEnvelope(id, outcome.error!)]))
            )
          })
        )
      const label = Served.labelOf(name, (n) => dispatcher.source.lookup(n) !== undefined)
      const traceParent = payload.traceparent === undefined ? undefined : Tracing.parse(payload.traceparent, payload.tracestate)
      return Served.served(label, traceParent, body, () => {
        release?.()
        if (requests.get(id) === served) requests.delete(id)
        if (perCall) {
          const state = channels.get(channel)
          if (state !== undefined) {
            state.served.delete(id)
            // After the requests that arrived in the same read as this one were all registered (a request can
            // finish before the transport has pushed the next envelope of that read).
            if (state.served.size === 0) {
              queueMicrotask(() => {
                if (channels.get(channel) === state) releaseIfIdle(channel, state)
              })
            }
          }
        }
      })
    }

    const startRequest = (envelope: EventEnvelope, channel: Channel): void => {
      const id = envelope.id
      if (requests.has(id)) {
        return refuse(channel, id, {
          code: "INVALID_INPUT",
          message: `duplicate request id: a call with id ${CallError.echo(id)} is already in flight`,
          retryable: false
        })
      }
      if (requests.size >= maxInFlight) return refuse(channel, id, overloadedPayload)
      const served: Served = { channel, fiber: undefined, timedOut: false }
      requests.set(id, served)
      if (perCall) stateOf(channel).served.add(id)
      served.fiber = runFork(serveRequest(envelope, channel, served))
    }

    // ---------------------------------------------------------------------------------------------------------
    // Routing: every envelope, whatever channel it came on, by type and id.

    const receive = (envelope: EventEnvelope, channel: Channel): Effect.Effect<void> | undefined => {
      if (closed) return undefined
      switch (envelope.type) {
        case "call.requested":
          startRequest(envelope, channel)
          return undefined
        case "call.responded": {
          const entry = pending.get(envelope.id)
          if (entry === undefined) return undefined
          const output = envelope.payload.output ?? null
          if (Json.exceedsDepth(output)) {
            // a hostile callee: nothing downstream (decoding, printing, logging) may recurse that deep
            abort(entry)
            settle(entry, CallError.internal(Json.tooDeep("the output")))
            return undefined
          }
          if (entry.mailbox !== undefined) return entry.mailbox.offer(output)
          settle(entry, undefined, output)
          return undefined
        }
        case "call.error": {
          const entry = pending.get(envelope.id)
          if (entry === undefined) return undefined
          const payload = Json.exceedsDepth(envelope.payload.details)
            ? { ...envelope.payload, details: undefined }
            : envelope.payload
          settle(entry, CallError.fromPayload(payload))
          return undefined
        }
        case "call.completed": {
          const entry = pending.get(envelope.id)
          if (entry !== undefined) {
            settle(entry, entry.mailbox === undefined ? CallError.internal("call completed without a response") : undefined)
          }
          return undefined
        }
        case "call.aborted": {
          const served = requests.get(envelope.id)
          // signal only: the request leaves the map when its fiber is done
          if (served !== undefined) served.fiber?.unsafeInterruptAsFork(FiberId.none)
          else {
            const entry = pending.get(envelope.id)
            if (entry !== undefined) settle(entry, CallError.internal("request aborted by peer"))
          }
          return undefined
        }
        default:
          return undefined
      }
    }

    const ended = (channel: Channel, error: TransportError | undefined): void => {
      if (error !== undefined && error.reason === "InvalidFrame") {
        runFork(warnOnce("frame", `invalid frame from the peer (stream reset): ${error.message}`))
      }
      const state = channels.get(channel)
      if (state === undefined) {
        // the peer finished a channel nothing runs on: release it
        if (perCall && !closed) channel.close()
        return
      }
      if (error === undefined) {
        // The peer finished its side: served requests go on (they answer, then release the channel); a call still
        // waiting on it gets no answer there any more.
        if (state.call !== undefined) settle(state.call, closedError())
        releaseIfIdle(channel, state)
        return
      }
      // Reset or invalid: the requests on it lost their caller, the call waiting on it its answer.
      for (const id of state.served) requests.get(id)?.fiber?.unsafeInterruptAsFork(FiberId.none)
      if (state.call !== undefined) settle(state.call, closedError())
    }

    const idle = () => requests.size === 0 && pending.size === 0

    yield* transport.run({ receive, ended, idle }).pipe(
      Effect.zipRight(Effect.forkDaemon(shutdown)),
      Effect.forkScoped
    )

    // ---------------------------------------------------------------------------------------------------------
    // Calling: outgoing calls and subscriptions.

    const requestEnvelope = (
      id: string,
      operation: string,
      input: unknown,
      callOptions: CallOptions,
      span: Tracer.AnySpan | undefined
    ): EventEnvelope => {
      const payload: Record<string, unknown> = {
        operationId: `/${operation}`,
        input: input === undefined ? null : input
      }
      const token = callOptions.authToken ?? options.authToken
      if (token !== undefined) payload.auth_token = Redacted.value(token)
      if (callOptions.forwardedFor !== undefined) payload.forwarded_for = callOptions.forwardedFor
      if (callOptions.timeout !== undefined) {
        payload.timeout_ms = Math.max(0, Math.ceil(millis(callOptions.timeout)))
      }
      if (span !== undefined) Tracing.inject(payload, span)
      return { type: "call.requested", id, payload }
    }

    const sendFailure = (error: TransportError) =>
      error.reason === "InvalidFrame" ? CallError.invalidInput(`input cannot be sent: ${error.message}`) : closedError()

    /**
     * Register a call on a fresh channel, arm its timer, and write its request; `last`: nothing follows it on the
     * channel but an abort (a query or mutation), so a stream transport finishes its side with it (`writeLast`).
     */
    const start = (
      channel: Channel,
      entry: Pending,
      envelope: EventEnvelope,
      timeout: Duration.DurationInput | undefined,
      last: boolean
    ) =>
      Effect.suspend(() => {
        if (closed) return Effect.fail(closedError())
        pending.set(entry.id, entry)
        if (perCall) stateOf(channel).call = entry
        if (timeout !== undefined) {
          entry.cancelTimer = deadlines.add(clock.unsafeCurrentTimeMillis() + millis(timeout), () => {
            abort(entry)
            settle(entry, CallError.timeout())
          })
        }
        const sent = last && channel.writeLast !== undefined ? channel.writeLast([envelope]) : write(channel, [envelope])
        return Effect.mapError(sent, (error) => {
          settle(entry, sendFailure(error))
          return sendFailure(error)
        })
      })

    /** The caller gave up (interrupted, timed out, consumer gone): tell the peer, forget the call. */
    const abort = (entry: Pending) => {
      if (entry.done || closed) return
      runFork(Effect.ignore(write(entry.channel, [{ type: "call.aborted", id: entry.id, payload: {} }])))
    }

    const giveUp = (entry: Pending) =>
      Effect.sync(() => {
        if (entry.done) return
        abort(entry)
        settle(entry, closedError())
      })

    const openChannel = Effect.suspend(() => closed ? Effect.fail(closedError()) : Effect.mapError(transport.open, closedError))

    const call = (
      operation: string,
      input: unknown,
      callOptions: CallOptions = {}
    ): Effect.Effect<unknown, CallError.CallError> => {
      const name = Operation.normalizeName(operation)
      return Tracing.around(name, "client", (span) => Effect.flatMap(openChannel, (channel) => {
        const id = crypto.randomUUID()
        const entry: Pending = {
          id,
          channel,
          done: false,
          resume: undefined,
          result: undefined,
          mailbox: undefined,
          cancelTimer: undefined
        }
        const wait = Effect.async<unknown, CallError.CallError>((resume) => {
          if (entry.result !== undefined) return resume(entry.result)
          entry.resume = resume
        })
        return Effect.onInterrupt(
          Effect.zipRight(start(channel, entry, requestEnvelope(id, name, input, callOptions, span), callOptions.timeout, true), wait),
          () => giveUp(entry)
        )
      }))
    }

    const subscribe = (
      operation: string,
      input: unknown,
      callOptions: CallOptions = {}
    ): Stream.Stream<unknown, CallError.CallError> =>
      Stream.unwrapScoped(Effect.gen(function*() {
        const name = Operation.normalizeName(operation)
        const span = yield* Tracing.aroundScoped(name)
        const channel = yield* openChannel
        const entry: Pending = {
          id: crypto.randomUUID(),
          channel,
          done: false,
          resume: undefined,
          result: undefined,
          mailbox: new Mailbox(subscriptionBuffer),
          cancelTimer: undefined
        }
        yield* Effect.addFinalizer(() =>
          Effect.zipRight(giveUp(entry), Effect.sync(() => entry.mailbox!.close()))
        )
        yield* start(channel, entry, requestEnvelope(entry.id, name, input, callOptions, span), callOptions.timeout, false)
        return Stream.repeatEffectChunkOption(entry.mailbox!.take)
      }))

    return {
      call,
      subscribe,
      close: Effect.zipRight(Effect.forkDaemon(shutdown), Deferred.await(closedSignal)),
      closed: Deferred.await(closedSignal),
      isClosed: () => closed,
      stats: Effect.sync((): Stats => ({
        requests: requests.size,
        pending: pending.size,
        exchanges: channels.size,
        handlers: dispatcher.running(),
        detached: dispatcher.detached()
      })),
      dispatcher
    }
  })
