/**
 * Spans recorded by the OpenTelemetry SDK in memory, through `@effect/opentelemetry`'s `NodeSdk.layer` — the way an
 * embedding program records a node's spans — and a wait for a finished span that matches.
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Effect } from "effect"

/** OpenTelemetry's span kinds, as recorded. */
export const Kind = { INTERNAL: 0, SERVER: 1, CLIENT: 2 } as const

/** An exporter that keeps every span, and the layer that records into it (provide it to the program). */
export const recording = () => {
  const exporter = new InMemorySpanExporter()
  const layer = NodeSdk.layer(() => ({
    resource: { serviceName: "alknet-test" },
    spanProcessor: new SimpleSpanProcessor(exporter)
  }))
  return { exporter, layer }
}

/** Wait (for a condition, not for a time) until a finished span matches. */
export const finished = (exporter: InMemorySpanExporter, match: (span: ReadableSpan) => boolean) =>
  Effect.gen(function*() {
    for (;;) {
      const found = exporter.getFinishedSpans().find(match)
      if (found !== undefined) return found
      yield* Effect.sleep("10 millis")
    }
  })
