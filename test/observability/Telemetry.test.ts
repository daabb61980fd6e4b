/**
 * OTLP/HTTP export (`Telemetry.layer`) to a collector on 127.0.0.1: the spans and metrics of served calls arrive as
 * OTLP JSON with the configured service name and headers; and what turns export on (config first, then the standard
 * `OTEL_*` variables).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, Redacted, Schema } from "effect"
import * as Http from "node:http"
import * as Telemetry from "../../src/observability/Telemetry.js"
import * as Operation from "../../src/services/Operation.js"
import * as CallHarness from "../call/harness.js"
import { listen } from "../shared/http.js"

interface Received {
  readonly path: string
  readonly headers: Http.IncomingHttpHeaders
  readonly body: any
}

/** A minimal OTLP/HTTP JSON collector: it keeps what it receives. */
const collector = Effect.gen(function*() {
  const received: Array<Received> = []
  const server = Http.createServer((request, response) => {
    let text = ""
    request.on("data", (chunk) => (text += chunk))
    request.on("end", () => {
      received.push({ path: request.url ?? "", headers: request.headers, body: JSON.parse(text) })
      response.writeHead(200, { "content-type": "application/json" })
      response.end("{}")
    })
  })
  return { url: yield* listen(server), received }
})

const hello = Operation.query({
  name: "otlp/hello",
  input: Schema.Unknown,
  output: Schema.String,
  handler: () => Effect.succeed("hi")
})

describe("OTLP export", () => {
  it.live("spans and metrics of served calls reach the collector, with the service name and headers", () =>
    Effect.gen(function*() {
      const { received, url } = yield* collector
      yield* Effect.gen(function*() {
        const pair = yield* CallHarness.makePair([hello])
        expect(yield* pair.client.call("otlp/hello", {})).toBe("hi")
      }).pipe(
        Effect.scoped,
        // closing the layer flushes what is buffered
        Effect.provide(Telemetry.layer({
          endpoint: url,
          serviceName: "alknet-under-test",
          headers: { "x-collector-key": Redacted.make("k-123") },
          exportInterval: "1 minute"
        }))
      )
      const traces = received.filter((r) => r.path === "/v1/traces")
      const spans = traces.flatMap((r) => r.body.resourceSpans.flatMap((rs: any) => rs.scopeSpans.flatMap((ss: any) => ss.spans)))
      expect(spans.map((s: any) => s.name)).toEqual(expect.arrayContaining(["otlp/hello"]))
      const service = traces[0]!.body.resourceSpans[0].resource.attributes.find((a: any) => a.key === "service.name")
      expect(service.value.stringValue).toBe("alknet-under-test")
      expect(traces[0]!.headers["x-collector-key"]).toBe("k-123")
      const metrics = received.filter((r) => r.path === "/v1/metrics")
        .flatMap((r) => r.body.resourceMetrics.flatMap((rm: any) => rm.scopeMetrics.flatMap((sm: any) => sm.metrics)))
      expect(metrics.map((m: any) => m.name)).toEqual(
        expect.arrayContaining(["alknet_calls_total", "alknet_call_duration_seconds", "alknet_calls_in_flight"])
      )
    }).pipe(Effect.scoped))
})

describe("Telemetry.resolve", () => {
  it("off without an endpoint; the config section wins over OTEL_* variables; headers are parsed and redacted", () => {
    expect(Option.isNone(Telemetry.resolve(undefined, {}))).toBe(true)
    expect(Option.isNone(Telemetry.resolve({}, { OTEL_EXPORTER_OTLP_ENDPOINT: "  " }))).toBe(true)
    const fromEnv = Option.getOrThrow(Telemetry.resolve(undefined, {
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318",
      OTEL_SERVICE_NAME: "edge-1",
      OTEL_EXPORTER_OTLP_HEADERS: "Authorization=Bearer%20s3cret,x-team = blue,broken"
    }))
    expect(fromEnv).toMatchObject({ endpoint: "http://collector:4318", serviceName: "edge-1" })
    expect(Object.keys(fromEnv.headers!)).toEqual(["authorization", "x-team"])
    expect(Redacted.value(fromEnv.headers!.authorization!)).toBe("Bearer s3cret")
    expect(JSON.stringify(fromEnv)).not.toContain("s3cret")
    const fromConfig = Option.getOrThrow(Telemetry.resolve(
      { otlp_endpoint: "https://otel.example:4318", service_name: "head", export_interval_ms: 1000 },
      { OTEL_EXPORTER_OTLP_ENDPOINT: "http://other:4318", OTEL_SERVICE_NAME: "ignored" }
    ))
    expect(fromConfig).toMatchObject({ endpoint: "https://otel.example:4318", serviceName: "head" })
    expect(Option.getOrThrow(Telemetry.resolve(undefined, { OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" })).serviceName).toBe("alknet")
  })
})
