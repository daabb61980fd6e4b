/**
 * One served call, observed: its span (`Tracing.start`) and its metrics (`alknet_calls_total`,
 * `alknet_call_duration_seconds`, `alknet_calls_in_flight`). The wire (`call/Connection.ts`) and the HTTP gateway
 * serve calls through here, so both count and trace alike.
 *
 * This runs on every call, so with tracing off it costs one look at the fiber, a few metric updates and one `onExit`.
 */
import { Cause, Clock, Context, Effect, Exit, Option } from "effect"
import type { Scope, Tracer } from "effect"
import * as CallError from "../errors/CallError.js"
import * as Metrics from "./Metrics.js"
import * as Tracing from "./Tracing.js"

/** The metric and span name of a call to `name`: the name when the node serves it, else one shared `(unknown)`. */
export const labelOf = (name: string | undefined, serves: (name: string) => boolean): string =>
  name !== undefined && serves(name) ? name : "(unknown)"

/** A call being served: its span (tracing on) and how it ended, which the code serving it may set. */
export interface Call {
  readonly span: Tracer.Span | undefined
  readonly outcome: Tracing.Outcome
}

/** Start observing: the call, and the function that records its end (span and metrics). */
const begin = (label: string, span: Tracer.Span | undefined, clock: Clock.Clock) => {
  Metrics.callsInFlight.unsafeModify(1, Metrics.none)
  const call: Call = { span, outcome: { code: "OK", error: undefined } }
  const started = clock.unsafeCurrentTimeNanos()
  const end = (exit: Exit.Exit<unknown, unknown>) => {
    const outcome = call.outcome
    if (exit._tag === "Failure" && outcome.code === "OK") {
      if (Cause.isInterruptedOnly(exit.cause)) outcome.code = "ABORTED"
      else {
        const failure = Cause.failureOption(exit.cause)
        const error = Option.isSome(failure) && failure.value instanceof CallError.CallError
          ? failure.value
          : CallError.internal("internal error")
        outcome.code = error.code
        outcome.error = error
      }
    }
    const now = clock.unsafeCurrentTimeNanos()
    if (span !== undefined) Tracing.finish(span, outcome, exit, now)
    Metrics.callsInFlight.unsafeModify(-1, Metrics.none)
    Metrics.calls.unsafeUpdate(1, Metrics.operationCode.get(label, outcome.code))
    Metrics.callDuration.unsafeUpdate(Number(now - started) / 1e9, Metrics.operation.get(label))
  }
  return { call, end }
}

/**
 * Run `body` as the served call `label`, a child of the caller's span `parent` (if any). `body` may record how the
 * call ended in `call.outcome` (a transport that answers errors itself does); otherwise a failure's code is taken,
 * an interruption is `ABORTED`. `finally` runs after the call's end is recorded.
 */
export const served = <A, E, R>(
  label: string,
  parent: Tracer.ExternalSpan | undefined,
  body: (call: Call) => Effect.Effect<A, E, R>,
  finally_?: () => void
): Effect.Effect<A, E, R> =>
  Effect.withFiberRuntime((fiber) => {
    const clock = Context.get(fiber.currentDefaultServices, Clock.Clock)
    if (!Tracing.records(fiber.currentTracer)) {
      // Tracing off: no span; the work runs under the caller's span (if any), so calls it makes forward it.
      const { call, end } = begin(label, undefined, clock)
      const run = parent === undefined ? body(call) : Effect.withParentSpan(body(call), parent)
      return Effect.onExit(run, (exit) => {
        end(exit)
        finally_?.()
        return Effect.void
      })
    }
    return Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(Tracing.start(label, parent), (span) => {
        const { call, end } = begin(label, span, clock)
        return Effect.onExit(Effect.withParentSpan(restore(body(call)), span!), (exit) => {
          end(exit)
          finally_?.()
          return Effect.void
        })
      })
    )
  })

/** `served` for a call that lasts as long as a scope (a subscription streamed over HTTP): it ends with the scope. */
export const servedScoped = (
  label: string,
  parent: Tracer.ExternalSpan | undefined
): Effect.Effect<Call & { readonly parent: Tracer.AnySpan | undefined }, never, Scope.Scope> =>
  Effect.flatMap(Effect.clock, (clock) =>
    Effect.map(
      Effect.acquireRelease(
        Effect.map(Tracing.start(label, parent), (span) => begin(label, span, clock)),
        ({ end }, exit) => Effect.sync(() => end(exit))
      ),
      ({ call }) => ({ ...call, parent: call.span ?? parent })
    ))
