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

/**
 * One observed call: a single object per call (this runs on every call). Latency is measured with
 * `performance.now()` (a number, no allocation); the span's times come from the fiber's `Clock`.
 */
class Observed implements Call, Tracing.Outcome {
  code = "OK"
  error: CallError.CallError | undefined = undefined
  private readonly started = performance.now()

  constructor(
    private readonly label: string,
    readonly span: Tracer.Span | undefined,
    private readonly clock: Clock.Clock
  ) {
    Metrics.callsInFlight.unsafeModify(1, Metrics.none)
  }

  get outcome(): Tracing.Outcome {
    return this
  }

  end(exit: Exit.Exit<unknown, unknown>): void {
    if (exit._tag === "Failure" && this.code === "OK") {
      if (Cause.isInterruptedOnly(exit.cause)) this.code = "ABORTED"
      else {
        const failure = Cause.failureOption(exit.cause)
        Tracing.failed(
          this,
          Option.isSome(failure) && failure.value instanceof CallError.CallError ? failure.value : CallError.internal("internal error")
        )
      }
    }
    if (this.span !== undefined) Tracing.finish(this.span, this, exit, this.clock.unsafeCurrentTimeNanos())
    Metrics.callsInFlight.unsafeModify(-1, Metrics.none)
    Metrics.calls.unsafeUpdate(1, Metrics.operationCode.get(this.label, this.code))
    Metrics.callDuration.unsafeUpdate((performance.now() - this.started) / 1000, Metrics.operation.get(this.label))
  }
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
    const ended = (call: Observed) => (exit: Exit.Exit<A, E>) => {
      call.end(exit)
      finally_?.()
      return Effect.void
    }
    if (!Tracing.records(fiber.currentTracer)) {
      // Tracing off: no span; the work runs under the caller's span (if any), so calls it makes forward it.
      const call = new Observed(label, undefined, clock)
      return Effect.onExit(parent === undefined ? body(call) : Effect.withParentSpan(body(call), parent), ended(call))
    }
    return Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(Tracing.start(label, parent), (span) => {
        const call = new Observed(label, span, clock)
        return Effect.onExit(Effect.withParentSpan(restore(body(call)), span!), ended(call))
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
        Effect.map(Tracing.start(label, parent), (span) => new Observed(label, span, clock)),
        (call, exit) => Effect.sync(() => call.end(exit))
      ),
      (call) => ({ span: call.span, outcome: call.outcome, parent: call.span ?? parent })
    ))
