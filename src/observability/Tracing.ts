/**
 * Trace context across the wire (W3C Trace Context, https://www.w3.org/TR/trace-context/) and the spans the node makes.
 *
 * `call.requested` may carry `traceparent` / `tracestate` (the names MCP and HTTP use). The callee's span is a child of
 * the caller's, so a call through client → head → worker → an imported REST API is one trace.
 *
 * Spans are Effect spans: whatever `Tracer` the program provides records them (`Telemetry.layer` exports them over
 * OTLP; an embedding program may provide `@effect/opentelemetry`'s `NodeSdk`). With Effect's default tracer — nothing
 * records spans, tracing is off — the node makes no spans at all (their cost would buy nothing), yet still forwards a
 * caller's trace context to the calls it makes, unchanged, so a node without tracing does not break a trace.
 *
 * A malformed `traceparent` is ignored, never an error: the call runs as if it had none.
 */
import { Context, Effect, Exit, FiberId, Option, Tracer } from "effect"
import type { Scope } from "effect"
import type { CallError } from "../errors/CallError.js"

/** Effect's default tracer: spans it makes reach no one. */
const nativeTracer = Effect.runSync(Effect.tracer)

/** Whether `tracer` records spans (anything but Effect's default). */
export const records = (tracer: Tracer.Tracer): boolean => tracer !== nativeTracer

/** A caller's `tracestate`, kept on its external span so calls made on its behalf forward it. */
export class TraceState extends Context.Tag("alknet/TraceState")<TraceState, string>() {}

const hex = /^[0-9a-f]+$/
const zeros = /^0+$/
/** W3C: at most 32 list members of at most 256 characters each; we forward at most this many characters. */
const maxTraceState = 512

/**
 * Parse a `traceparent` (and its `tracestate`): the caller's span, or `undefined` when the header is absent or not
 * valid W3C (wrong lengths, upper case, all-zero ids, version `ff`, flags not hex).
 */
export const parse = (traceparent: unknown, tracestate?: unknown): Tracer.ExternalSpan | undefined => {
  if (typeof traceparent !== "string" || traceparent.length < 55 || traceparent.length > 512) return undefined
  const version = traceparent.slice(0, 2)
  // Version 00 is exactly 55 characters; a later version may append fields after a dash.
  if (version === "00" ? traceparent.length !== 55 : traceparent.length > 55 && traceparent[55] !== "-") return undefined
  if (version === "ff" || !hex.test(version)) return undefined
  if (traceparent[2] !== "-" || traceparent[35] !== "-" || traceparent[52] !== "-") return undefined
  const traceId = traceparent.slice(3, 35)
  const spanId = traceparent.slice(36, 52)
  const flags = traceparent.slice(53, 55)
  if (!hex.test(traceId) || !hex.test(spanId) || !hex.test(flags) || zeros.test(traceId) || zeros.test(spanId)) {
    return undefined
  }
  const state = typeof tracestate === "string" && tracestate.length > 0 && tracestate.length <= maxTraceState
    ? Context.make(TraceState, tracestate)
    : Context.empty()
  return Tracer.externalSpan({ traceId, spanId, sampled: (parseInt(flags, 16) & 1) === 1, context: state })
}

/** The `traceparent` naming `span` as the parent of the callee's span. */
export const traceparentOf = (span: Tracer.AnySpan): string =>
  `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}`

/** The `tracestate` the trace arrived with, if any (found on the remote ancestor of `span`). */
export const tracestateOf = (span: Tracer.AnySpan): string | undefined => {
  let current: Tracer.AnySpan | undefined = span
  for (let depth = 0; current !== undefined && depth < 64; depth++) {
    if (current._tag === "ExternalSpan") return Option.getOrUndefined(Context.getOption(current.context, TraceState))
    current = Option.getOrUndefined(current.parent)
  }
  return undefined
}

/** Put `span`'s trace context on an outgoing request's payload (or headers). */
export const inject = (target: Record<string, unknown>, span: Tracer.AnySpan): void => {
  target.traceparent = traceparentOf(span)
  const state = tracestateOf(span)
  if (state !== undefined) target.tracestate = state
}

/** The span a call made now would be a child of, if any. */
export const current: Effect.Effect<Option.Option<Tracer.AnySpan>> = Effect.serviceOption(Tracer.ParentSpan)

/** A call's span attributes (OpenTelemetry's RPC conventions). */
const rpcAttributes = (operation: string) => ({ "rpc.system": "alknet", "rpc.method": operation })

/** The size of a JSON value as UTF-8 bytes (for span attributes; only computed when tracing is on). */
export const jsonBytes = (value: unknown): number => {
  try {
    return Buffer.byteLength(JSON.stringify(value ?? null) ?? "null")
  } catch {
    return 0
  }
}

/** How a served call ended, for its span (and its metrics). */
export interface Outcome {
  /** `OK`, the error code, `ABORTED` or `TIMEOUT`. */
  code: string
  error: CallError | undefined
}

/** Record that a served call ended with `error`. */
export const failed = (outcome: Outcome, error: CallError): void => {
  outcome.code = error.code
  outcome.error = error
}

/** Name a served call's caller on its span (its identity id: a peer id, fingerprint or key prefix, never a token). */
export const caller = (span: Tracer.Span | undefined, identity: Option.Option<{ readonly id: string }>): void => {
  if (span !== undefined && Option.isSome(identity)) span.attribute("alknet.caller", identity.value.id)
}

/**
 * The server span of one served call, named after its operation: a child of `parent` (the caller's span from the wire
 * or an HTTP header) or a new root; `undefined` with tracing off. End it with `finish`.
 */
export const start = (name: string, parent: Tracer.ExternalSpan | undefined): Effect.Effect<Tracer.Span | undefined> =>
  Effect.tracerWith((tracer) =>
    records(tracer)
      ? Effect.makeSpan(name, {
        kind: "server",
        captureStackTrace: false,
        attributes: rpcAttributes(name),
        ...(parent === undefined ? { root: true } : { parent })
      })
      : Effect.succeed(undefined)
  )

/** End a served call's span with how the call ended: `alknet.code`, and an error status for anything but OK. */
export const finish = (span: Tracer.Span, outcome: Outcome, exit: Exit.Exit<unknown, unknown>, now: bigint): void => {
  span.attribute("alknet.code", outcome.code)
  span.end(now, outcomeExit(outcome, exit))
}

const outcomeExit = (outcome: Outcome, exit: Exit.Exit<unknown, unknown>): Exit.Exit<unknown, unknown> => {
  if (outcome.code === "OK") return Exit.void
  if (outcome.code === "ABORTED") return Exit.isInterrupted(exit) ? exit : Exit.interrupt(FiberId.none)
  return outcome.error !== undefined ? Exit.fail(outcome.error) : exit
}

/**
 * A span around an outgoing call or a composed one (`kind` client or internal), when tracing is on. `body` gets the
 * span whose context goes on the wire: the new span, or with tracing off the caller's current span (forwarded as it
 * came), or `undefined`.
 */
export const around = <A, E, R>(
  name: string,
  kind: "client" | "internal",
  body: (span: Tracer.AnySpan | undefined) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  // One look at the fiber for both the tracer and the current span: this runs on every call.
  Effect.withFiberRuntime((fiber) =>
    records(fiber.currentTracer)
      ? Effect.useSpan(name, { kind, captureStackTrace: false, attributes: rpcAttributes(name) }, (span) => Effect.withParentSpan(body(span), span))
      : body(fiber.currentSpan)
  )

/** `around` for a call that lives as long as a scope (a subscription): the span ends when the scope closes. */
export const aroundScoped = (name: string): Effect.Effect<Tracer.AnySpan | undefined, never, Scope.Scope> =>
  Effect.withFiberRuntime((fiber) =>
    records(fiber.currentTracer)
      ? Effect.makeSpanScoped(name, { kind: "client", captureStackTrace: false, attributes: rpcAttributes(name) })
      : Effect.succeed(fiber.currentSpan)
  )
