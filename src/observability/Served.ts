/**
 * One served call, observed: its span (`Tracing.start`) and its metrics (`alknet_calls_total`,
 * `alknet_call_duration_seconds`, `alknet_calls_in_flight`). The wire (`call/Connection.ts`) and the HTTP gateway
 * serve calls through here, so both count and trace alike.
 */
import { Cause, Effect, Exit, Option } from "effect"
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
  /** What the call's work runs under: its span, or with tracing off the caller's (forwarded as it came). */
  readonly parent: Tracer.AnySpan | undefined
}

const begin = (label: string, parent: Tracer.ExternalSpan | undefined) =>
  Effect.clockWith((clock) =>
    Effect.map(Tracing.start(label, parent), (span) => {
      Metrics.callsInFlight.unsafeModify(1, Metrics.none)
      const call: Call = { span, outcome: { code: "OK", error: undefined }, parent: span ?? parent }
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
    })
  )

/**
 * Run `body` as the served call `label`, a child of the caller's span `parent` (if any). `body` may record how the
 * call ended in `call.outcome` (a transport that answers errors itself does); otherwise a failure's code is taken,
 * an interruption is `ABORTED`.
 */
export const served = <A, E, R>(
  label: string,
  parent: Tracer.ExternalSpan | undefined,
  body: (call: Call) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(begin(label, parent), ({ call, end }) => {
      const run = restore(body(call))
      return Effect.onExit(
        call.parent === undefined ? run : Effect.withParentSpan(run, call.parent),
        (exit) => Effect.sync(() => end(exit))
      )
    })
  )

/** `served` for a call that lasts as long as a scope (a subscription streamed over HTTP): it ends with the scope. */
export const servedScoped = (
  label: string,
  parent: Tracer.ExternalSpan | undefined
): Effect.Effect<Call, never, Scope.Scope> =>
  Effect.map(
    Effect.acquireRelease(begin(label, parent), ({ end }, exit) => Effect.sync(() => end(exit))),
    ({ call }) => call
  )
