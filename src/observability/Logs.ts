/**
 * The node's log lines, for people or for machines (`alknet node --log-format pretty|json`, config `log_format`).
 *
 * - `pretty`: Effect's readable lines (`Logger.prettyLogger`), plus a `trace_id` annotation when the line was logged
 *   inside a span;
 * - `json`: one object per line — `time`, `level`, `message`, `annotations`, `spans` (name → ms since it began),
 *   `trace_id` / `span_id` when the logging fiber has a current span (`Tracer.ParentSpan` in its context, an
 *   external span from a `traceparent` included), `cause` for a failure, `fiber`.
 *
 * Both write to stderr through the fiber's `Console` (as `prettyLogger({ stderr: true })` does), so a program that
 * replaces the console (the CLI, a test) gets the lines. Secrets stay out: messages and annotations go through
 * Effect's redaction (`Redacted` values print as `<redacted>`).
 *
 * `logger(options)` is one logger that writes in the fiber's `currentFormat`: the format can change for one part of a
 * program with `Effect.locally(currentFormat, "json")`.
 */
import { Console, Context, DefaultServices, FiberRef, FiberRefs, HashMap, Inspectable, Logger, Option, Tracer } from "effect"

export type Format = "pretty" | "json"

/** The format `logger` writes in, for the fiber that logs (default `pretty`). */
export const currentFormat: FiberRef.FiberRef<Format> = FiberRef.unsafeMake<Format>("pretty")

/** The trace and span id of the span the fiber is in, if any. */
export const traceOf = (context: FiberRefs.FiberRefs): Option.Option<{ readonly traceId: string; readonly spanId: string }> =>
  Option.map(
    Context.getOption(FiberRefs.getOrDefault(context, FiberRef.currentContext), Tracer.ParentSpan),
    (span) => ({ traceId: span.traceId, spanId: span.spanId })
  )

/** The fiber's console, for writing to stderr. */
const consoleOf = (context: FiberRefs.FiberRefs) =>
  Context.get(FiberRefs.getOrDefault(context, DefaultServices.currentServices), Console.Console).unsafe

/** An `Error` as JSON: its name and message (own fields too), not `{}`. */
const errorJson = (value: unknown) =>
  value instanceof Error && !("toJSON" in value) ? { ...value, name: value.name, message: value.message } : value

/** The JSON object of one log line (before it is serialized). */
export const jsonRecord = (options: Logger.Logger.Options<unknown>): Record<string, unknown> => {
  const structured = Logger.structuredLogger.log(options)
  const trace = traceOf(options.context)
  return {
    time: structured.timestamp,
    level: structured.logLevel,
    message: Array.isArray(structured.message) ? structured.message.map(errorJson) : errorJson(structured.message),
    annotations: structured.annotations,
    spans: structured.spans,
    ...(Option.isSome(trace) ? { trace_id: trace.value.traceId, span_id: trace.value.spanId } : {}),
    ...(structured.cause === undefined ? {} : { cause: structured.cause }),
    fiber: structured.fiberId
  }
}

/** One JSON object per line on stderr. */
export const json: Logger.Logger<unknown, void> = Logger.make((options) => {
  const line = Inspectable.withRedactableContext(options.context, () => Inspectable.stringifyCircular(jsonRecord(options)))
  consoleOf(options.context).error(line)
})

/** Effect's readable lines on stderr, with the trace id of the current span as an annotation. */
export const pretty = (options: { readonly colors?: boolean } = {}): Logger.Logger<unknown, void> => {
  const base = Logger.prettyLogger({ stderr: true, colors: options.colors ?? false, mode: "tty" })
  return Logger.make((log) => {
    const trace = traceOf(log.context)
    if (Option.isNone(trace)) return base.log(log)
    base.log({ ...log, annotations: HashMap.set(log.annotations, "trace_id", trace.value.traceId) })
  })
}

/** Writes in the fiber's `currentFormat`. */
export const logger = (options: { readonly colors?: boolean } = {}): Logger.Logger<unknown, void> => {
  const readable = pretty(options)
  return Logger.make((log) =>
    FiberRefs.getOrDefault(log.context, currentFormat) === "json" ? json.log(log) : readable.log(log)
  )
}
