/**
 * The dispatcher: SPEC §5 (root calls, from the wire or in-process) and §7–§8 (composed calls through `ctx.env`).
 *
 * Root calls: `prepare` runs steps 4–8 (lookup, visibility, dispatch path, access control, input validation) and
 * returns the handler run with its deadline (step 9). Identity resolution and `forwarded_for` (steps 1–3) belong to
 * the caller of `prepare` (the connection knows the token resolver and the connection identity).
 *
 * Composed calls (`ctx.env.invoke`): scoped-env reachability (outside → NOT_FOUND), lookup, INVALID_OPERATION_TYPE for
 * subscriptions, the authority switch (the child's access check runs against the composing handler's authority),
 * `internal = true`, fresh metadata, no `forwarded_for`, inherited capabilities and deadline.
 *
 * Cancellation is fiber interruption. Under `AbortDependents` a child runs inline in its parent's fiber, so
 * interrupting the parent interrupts the child. Under `ContinueRunning` the child runs in a fiber of the dispatcher's
 * own set (so interrupting the parent does not reach it) and the parent joins it; every call node carries an
 * abort mark, and a call whose ancestor was aborted cannot start children ("request aborted").
 *
 * Hostile input: before any schema sees an input (root or composed), its nesting depth is checked without recursion
 * (`schema/Json.ts`, default 64 levels): deeper is `INVALID_INPUT "input is nested deeper than 64 levels"`, so
 * nothing downstream (decoding, error formatting, logging, the handler) recurses without bound on caller input. What
 * an error message repeats of the input is bounded (`CallError.echo`).
 *
 * Where names resolve is an `OperationSource`: the curated registry now; the peer graph composes overlays later by
 * passing another source, or by resolving a registration itself and calling `invokeRegistration`.
 */
import { Cause, Chunk, Clock, Duration, Effect, Either, Exit, Fiber, FiberId, FiberSet, Option, ParseResult, Stream } from "effect"
import type { Scope } from "effect"
import * as CallError from "../errors/CallError.js"
import type { Identity } from "../schema/Identity.js"
import * as Json from "../schema/Json.js"
import * as Operation from "../services/Operation.js"
import type { HandlerRegistration, InvokeOptions, OperationContext, OperationEnv } from "../services/Operation.js"
import * as Tracing from "../observability/Tracing.js"
import * as Deadlines from "./Deadlines.js"

/** Where operation names resolve. */
export interface OperationSource {
  readonly lookup: (name: string) => HandlerRegistration | undefined
  /** Every registration, for discovery. */
  readonly list: () => Iterable<HandlerRegistration>
}

/** A root call (from the wire or from in-process code). */
export interface RootRequest {
  readonly requestId: string
  /** The operation name; a leading slash is accepted. */
  readonly operation: string
  readonly input: unknown
  readonly identity: Option.Option<Identity>
  readonly forwardedFor: Option.Option<Identity>
  /** Overrides the default deadline (the wire's `timeout_ms`). */
  readonly timeout?: Duration.Duration | undefined
}

/** The dispatch path a root call came by: `any` = the wire (it branches on the op type). */
export type DispatchPath = "unary" | "streaming" | "any"

export type Prepared =
  | {
    readonly _tag: "Unary"
    /** The handler bounded by its deadline: TIMEOUT (and the handler interrupted) past it. */
    readonly run: Effect.Effect<unknown, CallError.CallError>
    /**
     * The handler without the deadline, for a caller that enforces `deadline` itself by interrupting the fiber that
     * runs it (the connection does: one timer fiber per call instead of a race of two).
     */
    readonly handler: Effect.Effect<unknown, CallError.CallError>
    readonly deadline: Option.Option<number>
  }
  | {
    readonly _tag: "Streaming"
    /** The items bounded by the deadline (TIMEOUT past it). */
    readonly run: Stream.Stream<unknown, CallError.CallError>
    /** The items without the deadline, for a caller that enforces `deadline` by interrupting the fiber that runs it. */
    readonly items: Stream.Stream<unknown, CallError.CallError>
    readonly deadline: Option.Option<number>
  }

export interface Dispatcher {
  readonly source: OperationSource
  /** SPEC §5 steps 4–9 for a root call. */
  readonly prepare: (request: RootRequest, path: DispatchPath) => Effect.Effect<Prepared, CallError.CallError>
  /** `ctx.env.invoke`: a composed call by name, resolved through `from` (default: `source`). */
  readonly invokeChild: (
    parent: OperationContext,
    name: string,
    input: unknown,
    options?: InvokeOptions,
    from?: OperationSource
  ) => Effect.Effect<unknown, CallError.CallError>
  /**
   * A composed call of an already-resolved registration, for overlays that route names themselves (a session overlay,
   * `invokePeer`). The child's own `ctx.env` resolves through `from` (default: `source`).
   */
  readonly invokeRegistration: (
    parent: OperationContext,
    registration: HandlerRegistration,
    input: unknown,
    options?: InvokeOptions,
    from?: OperationSource
  ) => Effect.Effect<unknown, CallError.CallError>
  /** Handlers running now (root and composed). */
  readonly running: () => number
  /** `ContinueRunning` children running in the dispatcher's own fibers. */
  readonly detached: () => number
}

export interface Options {
  readonly source: OperationSource
  /** Deadline of a root query/mutation (default 30 s). Subscriptions have none unless the request sets one. */
  readonly defaultTimeout?: Duration.DurationInput
  /**
   * Extend every context's env (the seam for the peer graph: e.g. add `invokePeer`). Called once per call with the
   * context and its base env, which resolves names through the source the call was made from.
   */
  readonly extendEnv?: (ctx: OperationContext, env: OperationEnv) => OperationEnv
  /** Inputs nested deeper than this are `INVALID_INPUT` before validation (default `Json.DEFAULT_MAX_DEPTH`, 64). */
  readonly maxInputDepth?: number
  /**
   * The timer that enforces deadlines (the connection's: one timer for every call on it). Default: one of the
   * dispatcher's own.
   */
  readonly deadlines?: Deadlines.Deadlines
}

/** The mark an abort leaves on a call node; children check their ancestors before starting. */
interface AbortNode {
  aborted: boolean
  readonly parent: AbortNode | undefined
}

const abortNodes = new WeakMap<OperationContext, AbortNode>()

const ancestorAborted = (node: AbortNode | undefined): boolean => {
  for (let n = node; n !== undefined; n = n.parent) if (n.aborted) return true
  return false
}

/**
 * The `INVALID_INPUT` message for a parse issue: it names the failing path. Path and message come from the input (its
 * keys, the "actual" value), so each is echoed bounded. Call it only on input within the depth limit.
 */
export const describeInputIssue = (issue: ParseResult.ParseIssue): string => {
  const [first] = ParseResult.ArrayFormatter.formatIssueSync(issue)
  if (first === undefined) return "invalid input"
  const path = CallError.echo(first.path.map(String).join("."))
  if (first._tag === "Missing") return `missing required field: ${path}`
  const message = CallError.echo(first.message)
  return path === "" ? `invalid input: ${message}` : `invalid input at ${path}: ${message}`
}

/** Step 8: the depth check, then the operation's input schema. */
const decodeInput = (
  registration: HandlerRegistration,
  input: unknown,
  maxDepth: number
): Either.Either<unknown, CallError.CallError> => {
  const value = input === undefined ? null : input
  if (Json.exceedsDepth(value, maxDepth)) return Either.left(CallError.invalidInput(Json.tooDeep("input", maxDepth)))
  return Either.mapLeft(
    registration.spec.decodeInput(value),
    (issue) => CallError.invalidInput(describeInputIssue(issue))
  )
}

/** Map what a handler failed with to what the caller sees (declared codes pass, the rest is INTERNAL). */
const mapHandlerFailure = (registration: HandlerRegistration, cause: Cause.Cause<CallError.CallError>) => {
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure) && failure.value instanceof CallError.CallError) {
    const error = failure.value
    if (CallError.isProtocolCode(error.code)) return Effect.fail(error)
    const declared = registration.spec.errors.find((e) => e.code === error.code)
    if (declared === undefined) {
      return Effect.fail(CallError.internal(error.message, { code: error.code }))
    }
    if (declared.schema === undefined || error.details === undefined) return Effect.fail(error)
    const details = ParseResult.encodeUnknownEither(declared.schema)(error.details)
    if (Either.isRight(details)) {
      return Effect.fail(CallError.domain(error.code, error.message, details.right))
    }
    return Effect.zipRight(
      Effect.logError(`operation ${registration.spec.name}: details of ${error.code} do not match its schema`),
      Effect.fail(CallError.internal("internal error"))
    )
  }
  // A defect (or a failure that is not a CallError): log it here, never put it on the wire.
  return Effect.zipRight(
    Effect.logError(`operation ${registration.spec.name} failed with a defect`, cause),
    Effect.fail(CallError.internal("internal error"))
  )
}

const encodeOutput = (registration: HandlerRegistration, output: unknown) => {
  const encoded = registration.spec.encodeOutput(output)
  return Either.isRight(encoded) ? Effect.succeed(encoded.right) : Effect.zipRight(
    Effect.logError(
      `operation ${registration.spec.name} returned an output that does not match its schema`,
      ParseResult.TreeFormatter.formatIssueSync(encoded.left)
    ),
    Effect.fail(CallError.internal("internal error"))
  )
}

/** Encode a chunk of subscription items (one effect per chunk, not per item). */
const encodeChunk = (registration: HandlerRegistration, items: Chunk.Chunk<unknown>) => {
  const out: Array<unknown> = []
  for (const item of items) {
    const encoded = registration.spec.encodeOutput(item)
    if (Either.isLeft(encoded)) return Effect.map(encodeOutput(registration, item), Chunk.of) // logs and fails
    out.push(encoded.right)
  }
  return Effect.succeed(Chunk.unsafeFromArray(out))
}

export const make = (options: Options): Effect.Effect<Dispatcher, never, Scope.Scope> =>
  Effect.gen(function*() {
    const source = options.source
    const defaultTimeoutMillis = Duration.toMillis(Duration.decode(options.defaultTimeout ?? "30 seconds"))
    const maxInputDepth = options.maxInputDepth ?? Json.DEFAULT_MAX_DEPTH
    const detachedFibers = yield* FiberSet.make<unknown, CallError.CallError>()
    const runDetached = yield* FiberSet.runtime(detachedFibers)<never>()
    const deadlines = options.deadlines ?? (yield* Deadlines.make)
    let running = 0
    let detached = 0

    const makeContext = (
      fields: Omit<OperationContext, "env" | "metadata">,
      node: AbortNode,
      from: OperationSource
    ): OperationContext => {
      const base: OperationEnv = {
        invoke: (name: string, input: unknown, invokeOptions?: InvokeOptions) =>
          invokeChild(ctx, name, input, invokeOptions, from)
      }
      // Fields listed, not spread, and `env` a plain property set before freezing: a spread or a getter makes V8 build
      // a slow object (about 2 µs per call, against 0.25 µs).
      const ctx: { -readonly [K in keyof OperationContext]: OperationContext[K] } = {
        operation: fields.operation,
        requestId: fields.requestId,
        parentRequestId: fields.parentRequestId,
        identity: fields.identity,
        handlerIdentity: fields.handlerIdentity,
        forwardedFor: fields.forwardedFor,
        capabilities: fields.capabilities,
        metadata: new Map<string, unknown>(),
        scopedEnv: fields.scopedEnv,
        env: base,
        abortPolicy: fields.abortPolicy,
        deadline: fields.deadline,
        internal: fields.internal
      }
      ctx.env = Object.freeze(options.extendEnv === undefined ? base : options.extendEnv(ctx, base))
      Object.freeze(ctx)
      abortNodes.set(ctx, node)
      return ctx
    }

    /** Run a unary handler: output encoded, failures mapped, an interruption marks the node aborted. */
    const runUnary = (registration: HandlerRegistration, input: unknown, ctx: OperationContext, node: AbortNode) => {
      const handler = registration.handler
      if (handler._tag !== "Unary") return Effect.die("unreachable: unary run of a streaming handler")
      return Effect.suspend(() => {
        running++
        return handler.run(input, ctx)
      }).pipe(
        Effect.flatMap((output) => encodeOutput(registration, output)),
        Effect.catchAllCause((cause) =>
          Cause.isInterruptedOnly(cause) ? Effect.failCause(cause) : mapHandlerFailure(registration, cause)
        ),
        Effect.onInterrupt(() => Effect.sync(() => (node.aborted = true))),
        Effect.ensuring(Effect.sync(() => running--))
      )
    }

    /**
     * Bound an effect by an absolute deadline: TIMEOUT (retryable) and the effect is interrupted. The effect runs in a
     * child fiber that the shared timer interrupts at the deadline (no timer fiber per call).
     */
    const withDeadline = <A>(effect: Effect.Effect<A, CallError.CallError>, deadline: Option.Option<number>) =>
      Option.isNone(deadline) ? effect : Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const at = deadline.value
        if (at <= now) return Effect.fail(CallError.timeout())
        return Effect.flatMap(Effect.fork(effect), (fiber) => {
          let fired = false
          const cancel = deadlines.add(at, () => {
            fired = true
            fiber.unsafeInterruptAsFork(FiberId.none)
          })
          return Effect.flatMap(Fiber.await(fiber), (exit) => {
            cancel()
            return fired && Exit.isInterrupted(exit) ? Effect.fail(CallError.timeout()) : exit
          })
        })
      })

    const prepare = (request: RootRequest, path: DispatchPath): Effect.Effect<Prepared, CallError.CallError> => {
      const name = Operation.normalizeName(request.operation)
      const registration = source.lookup(name)
      // Steps 4–5: unknown, or Internal from a caller → the same NOT_FOUND (existence is not leaked).
      if (registration === undefined || registration.spec.visibility === "internal") {
        return Effect.fail(CallError.notFound(name))
      }
      const streaming = registration.spec.opType === "subscription"
      // Step 6: the dispatch path must match the op type.
      if (path !== "any" && streaming !== (path === "streaming")) {
        return Effect.fail(CallError.invalidOperationType(
          streaming
            ? `operation ${name} is a subscription; subscribe to it`
            : `operation ${name} is a ${registration.spec.opType}; call it`
        ))
      }
      // Step 7: access control; capabilities are attached only after it passed.
      const denied = Operation.check(registration.spec.accessControl, request.identity)
      if (denied !== undefined) return Effect.fail(denied)
      // Step 8: validate the input (its depth first).
      const decoded = decodeInput(registration, request.input, maxInputDepth)
      if (Either.isLeft(decoded)) return Effect.fail(decoded.left)
      // Step 9: the root context and its deadline.
      const timeoutMillis = request.timeout !== undefined
        ? Duration.toMillis(request.timeout)
        : streaming
        ? undefined
        : defaultTimeoutMillis
      return Effect.map(Clock.currentTimeMillis, (now): Prepared => {
        const node: AbortNode = { aborted: false, parent: undefined }
        const deadline = timeoutMillis === undefined ? Option.none() : Option.some(now + timeoutMillis)
        const ctx = makeContext({
          operation: name,
          requestId: request.requestId,
          parentRequestId: Option.none(),
          identity: request.identity,
          handlerIdentity: registration.authority,
          forwardedFor: request.forwardedFor,
          capabilities: registration.capabilities,
          scopedEnv: registration.scopedEnv,
          abortPolicy: "AbortDependents",
          deadline,
          internal: false
        }, node, source)
        if (!streaming) {
          const handler = runUnary(registration, decoded.right, ctx, node)
          return { _tag: "Unary", run: withDeadline(handler, deadline), handler, deadline }
        }
        const items = runStreaming(registration, decoded.right, ctx, node)
        return { _tag: "Streaming", run: withStreamDeadline(items, deadline), items, deadline }
      })
    }

    const runStreaming = (
      registration: HandlerRegistration,
      input: unknown,
      ctx: OperationContext,
      node: AbortNode
    ): Stream.Stream<unknown, CallError.CallError> => {
      const handler = registration.handler
      if (handler._tag !== "Streaming") return Stream.die("unreachable: streaming run of a unary handler")
      const items = Stream.suspend(() => {
        running++
        return handler.run(input, ctx)
      }).pipe(
        Stream.mapChunksEffect((chunk) => encodeChunk(registration, chunk)),
        Stream.catchAllCause((cause) =>
          Cause.isInterruptedOnly(cause) ? Stream.failCause(cause) : Stream.fromEffect(mapHandlerFailure(registration, cause))
        ),
        Stream.ensuringWith((exit) =>
          Effect.sync(() => {
            running--
            if (exit._tag === "Failure" && Cause.isInterruptedOnly(exit.cause)) node.aborted = true
          })
        )
      )
      return items
    }

    /** Bound a stream by an absolute deadline: TIMEOUT (retryable) and the stream is interrupted. */
    const withStreamDeadline = (items: Stream.Stream<unknown, CallError.CallError>, deadline: Option.Option<number>) => {
      if (Option.isNone(deadline)) return items
      const at = deadline.value
      return Stream.interruptWhen(
        items,
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.zipRight(Effect.sleep(Math.max(0, at - now)), Effect.fail(CallError.timeout())))
      )
    }

    const invokeChild = (
      parent: OperationContext,
      rawName: string,
      input: unknown,
      invokeOptions?: InvokeOptions,
      from: OperationSource = source
    ): Effect.Effect<unknown, CallError.CallError> => {
      const name = Operation.normalizeName(rawName)
      // The scoped env bounds reachability: outside it, the operation does not exist for this handler.
      if (!parent.scopedEnv.allows(name)) return Effect.fail(CallError.notFound(name))
      const registration = from.lookup(name)
      if (registration === undefined) return Effect.fail(CallError.notFound(name))
      return invokeRegistration(parent, registration, input, invokeOptions, from)
    }

    const invokeRegistration = (
      parent: OperationContext,
      registration: HandlerRegistration,
      input: unknown,
      invokeOptions?: InvokeOptions,
      from: OperationSource = source
    ): Effect.Effect<unknown, CallError.CallError> => {
      const name = registration.spec.name
      if (registration.spec.opType === "subscription") {
        return Effect.fail(CallError.invalidOperationType(`operation ${name} is a subscription; env.invoke cannot call it`))
      }
      const parentNode = abortNodes.get(parent)
      if (ancestorAborted(parentNode)) return Effect.fail(CallError.internal("request aborted"))
      // The authority switch: the child's access check runs against the composing handler's authority.
      const identity = Option.map(parent.handlerIdentity, Operation.authorityIdentity)
      const denied = Operation.check(registration.spec.accessControl, identity)
      if (denied !== undefined) return Effect.fail(denied)
      const decoded = decodeInput(registration, input, maxInputDepth)
      if (Either.isLeft(decoded)) return Effect.fail(decoded.left)
      const abortPolicy = invokeOptions?.abortPolicy ?? parent.abortPolicy
      const node: AbortNode = { aborted: false, parent: parentNode }
      const capabilities = registration.capabilities.size === 0
        ? parent.capabilities
        : new Map([...parent.capabilities, ...registration.capabilities])
      const ctx = makeContext({
        operation: name,
        requestId: crypto.randomUUID(),
        parentRequestId: Option.some(parent.requestId),
        identity,
        handlerIdentity: registration.authority,
        forwardedFor: Option.none(),
        capabilities,
        scopedEnv: registration.scopedEnv,
        abortPolicy,
        deadline: parent.deadline,
        internal: true
      }, node, from)
      // A composed call is a child span of its parent's (when tracing is on).
      const child = Tracing.around(name, "internal", () => runUnary(registration, decoded.right, ctx, node))
      // Inline, the child is interrupted with its parent; the deadline timer of the fiber it runs in (the root's, or
      // a detached ancestor's) covers it.
      if (abortPolicy === "AbortDependents") return child
      // ContinueRunning: the child is not a child fiber of the parent; an abort of the parent leaves it running.
      const tracked = Effect.ensuring(
        Effect.suspend(() => {
          detached++
          // Detached from the root's fiber: it enforces the shared deadline itself.
          return withDeadline(child, parent.deadline)
        }),
        Effect.sync(() => detached--)
      )
      // The detached fiber does not inherit the parent's context: its span is parented explicitly.
      return Effect.flatMap(Tracing.current, (span) =>
        Fiber.join(runDetached(Option.isSome(span) ? Effect.withParentSpan(tracked, span.value) : tracked)))
    }

    return {
      source,
      prepare,
      invokeChild,
      invokeRegistration,
      running: () => running,
      detached: () => detached
    }
  })
