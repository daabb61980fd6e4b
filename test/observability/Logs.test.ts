/**
 * The node's log formats: JSON lines (time, level, message, annotations, spans, and the trace / span id of the
 * current span, an external one included) and readable lines that show the trace id; `currentFormat` picks one per
 * fiber. Lines go to stderr through the fiber's console.
 */
import { afterEach, describe, expect, it, vi } from "@effect/vitest"
import { Effect, Logger, Redacted, Tracer } from "effect"
import * as Logs from "../../src/observability/Logs.js"

/** The lines `logger` writes to stderr while `effect` runs. */
const linesOf = <A, E>(effect: Effect.Effect<A, E>, logger: Logger.Logger<unknown, void> = Logs.json) =>
  Effect.gen(function*() {
    const lines: Array<string> = []
    const spy = vi.spyOn(console, "error").mockImplementation((...args: Array<unknown>) => {
      lines.push(args.map(String).join(" "))
    })
    yield* effect.pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)), Effect.ensuring(Effect.sync(() => spy.mockRestore())))
    return lines
  })

afterEach(() => {
  vi.restoreAllMocks()
})

describe("JSON log lines", () => {
  it.effect("one object per line: time, level, message, annotations, spans; no trace id outside a span", () =>
    Effect.gen(function*() {
      const lines = yield* linesOf(
        Effect.logWarning("peer lost").pipe(
          Effect.annotateLogs({ peer: "w1", token: Redacted.make("alk_secretTOKEN") }),
          Effect.withLogSpan("reconnect")
        )
      )
      expect(lines).toHaveLength(1)
      const record = JSON.parse(lines[0]!)
      expect(record).toMatchObject({ level: "WARN", message: "peer lost", annotations: { peer: "w1", token: "<redacted>" } })
      expect(new Date(record.time).toISOString()).toBe(record.time)
      expect(typeof record.spans.reconnect).toBe("number")
      expect(record).not.toHaveProperty("trace_id")
      expect(lines[0]).not.toContain("alk_secretTOKEN")
    }))

  it.effect("inside a span: its trace_id and span_id", () =>
    Effect.gen(function*() {
      let span: Tracer.Span | undefined
      const lines = yield* linesOf(
        Effect.gen(function*() {
          span = yield* Effect.currentSpan
          yield* Effect.logInfo("handling")
        }).pipe(Effect.withSpan("demo/echo"))
      )
      const record = JSON.parse(lines[0]!)
      expect(record.trace_id).toBe(span!.traceId)
      expect(record.span_id).toBe(span!.spanId)
      expect(record.trace_id).toMatch(/^[0-9a-f]{32}$/)
    }))

  it.effect("under an external span (a traceparent from the wire): its ids", () =>
    Effect.gen(function*() {
      const parent = Tracer.externalSpan({ traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7" })
      const lines = yield* linesOf(Effect.logInfo("forwarded").pipe(Effect.withParentSpan(parent)))
      expect(JSON.parse(lines[0]!)).toMatchObject({ trace_id: "4bf92f3577b34da6a3ce929d0e0e4736", span_id: "00f067aa0ba902b7" })
    }))

  it.effect("errors keep their message; a failure's cause is in the object; one line each", () =>
    Effect.gen(function*() {
      const lines = yield* linesOf(Effect.gen(function*() {
        yield* Effect.logError("failed", new Error("multi\nline"))
        yield* Effect.fail("boom").pipe(Effect.tapErrorCause((cause) => Effect.logError("call failed", cause)), Effect.ignore)
      }))
      expect(lines).toHaveLength(2)
      const [error, failure] = lines.map((line) => JSON.parse(line))
      expect(error).toMatchObject({ level: "ERROR", message: ["failed", { name: "Error", message: "multi\nline" }] })
      expect(failure.message).toBe("call failed")
      expect(failure.cause).toContain("boom")
    }))
})

describe("readable log lines", () => {
  it.effect("show the trace id inside a span, and nothing of it outside", () =>
    Effect.gen(function*() {
      let traceId = ""
      const inside = yield* linesOf(
        Effect.gen(function*() {
          traceId = (yield* Effect.currentSpan).traceId
          yield* Effect.logInfo("handling")
        }).pipe(Effect.withSpan("demo/echo")),
        Logs.pretty()
      )
      expect(inside.join("\n")).toContain("handling")
      expect(inside.join("\n")).toContain(`trace_id: ${traceId}`)
      const outside = yield* linesOf(Effect.logInfo("idle"), Logs.pretty())
      expect(outside.join("\n")).toContain("idle")
      expect(outside.join("\n")).not.toContain("trace_id")
    }))
})

describe("currentFormat", () => {
  it.effect("one logger writes readable lines by default and JSON where the fiber says so", () =>
    Effect.gen(function*() {
      const logger = Logs.logger()
      const readable = yield* linesOf(Effect.logInfo("started"), logger)
      expect(readable.join("\n")).toContain("INFO")
      expect(() => JSON.parse(readable[0]!)).toThrow()
      const json = yield* linesOf(Effect.locally(Effect.logInfo("started"), Logs.currentFormat, "json"), logger)
      expect(JSON.parse(json[0]!)).toMatchObject({ level: "INFO", message: "started" })
    }))
})
