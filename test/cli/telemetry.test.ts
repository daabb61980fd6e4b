/**
 * `alknet node` exports traces and metrics over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` names a collector (here
 * one on 127.0.0.1), with `OTEL_SERVICE_NAME` as its service name; what is buffered is sent when the node stops.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Http from "node:http"
import { listen } from "../shared/http.js"
import * as Cli from "./cli.js"

describe("alknet node with OpenTelemetry", () => {
  it.live("OTEL_EXPORTER_OTLP_ENDPOINT: the node's spans and metrics reach the collector", () =>
    Effect.gen(function*() {
      const received: Array<{ path: string; body: any }> = []
      const collector = Http.createServer((request, response) => {
        let text = ""
        request.on("data", (chunk) => (text += chunk))
        request.on("end", () => {
          received.push({ path: request.url ?? "", body: JSON.parse(text) })
          response.writeHead(200, { "content-type": "application/json" }).end("{}")
        })
      })
      const url = yield* listen(collector)
      const dir = yield* Cli.tempDir
      const { home } = yield* Cli.initHomeInProcess(dir, "otel")
      const node = yield* Cli.startNode(home, [], { env: { OTEL_EXPORTER_OTLP_ENDPOINT: url, OTEL_SERVICE_NAME: "edge-7" } })
      expect(node.stderr()).toContain(`exporting traces, metrics and logs to ${url}`)
      const info = yield* Cli.runInProcess(["call", node.quic, "node/info", "--fingerprint", node.fingerprint])
      expect(info.code, info.stderr).toBe(0)
      yield* node.signal("SIGTERM")
      expect(yield* node.exited).toBe(0)
      const spans = received.filter((r) => r.path === "/v1/traces").flatMap((r) =>
        r.body.resourceSpans.flatMap((rs: any) =>
          rs.scopeSpans.flatMap((ss: any) =>
            ss.spans.map((s: any) => ({
              name: s.name,
              service: rs.resource.attributes.find((a: any) => a.key === "service.name")?.value.stringValue
            }))
          )
        )
      )
      expect(spans).toContainEqual({ name: "node/info", service: "edge-7" })
      const metrics = received.filter((r) => r.path === "/v1/metrics")
        .flatMap((r) => r.body.resourceMetrics.flatMap((rm: any) => rm.scopeMetrics.flatMap((sm: any) => sm.metrics)))
      expect(metrics.map((m: any) => m.name)).toContain("alknet_calls_total")
    }).pipe(Effect.scoped), { timeout: 120_000 })
})
