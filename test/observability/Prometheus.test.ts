/**
 * `GET /metrics`'s renderer: Effect metrics in the Prometheus text format 0.0.4, checked with a strict parser.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Metric, MetricBoundaries } from "effect"
import * as Metrics from "../../src/observability/Metrics.js"
import * as Prometheus from "../../src/observability/Prometheus.js"
import { parse, valueOf } from "../shared/prometheus.js"

describe("Prometheus text format", () => {
  it.effect("counters, gauges and histograms, with HELP / TYPE, cumulative buckets and escaped labels", () =>
    Effect.gen(function*() {
      const requests = Metric.counter("test_prom_requests", { description: "Requests\nserved, with \\ in it", incremental: true })
      const level = Metric.counter("test_prom_level", { description: "A counter that may go down" })
      const temperature = Metric.gauge("test_prom_temperature")
      const latency = Metric.histogram("test_prom_latency_seconds", MetricBoundaries.fromIterable([0.1, 1, 10]), "Latency")
      const awkward = "a \"quoted\" back\\slash\nnew line"
      yield* Metric.increment(Metric.tagged(requests, "path", awkward))
      yield* Metric.incrementBy(Metric.tagged(requests, "path", "/ok"), 2)
      yield* Metric.incrementBy(level, 5)
      yield* Metric.incrementBy(level, -2)
      yield* Metric.set(temperature, -1.5)
      for (const v of [0.05, 0.5, 0.5, 5, 50]) yield* Metric.update(Metric.tagged(latency, "op", "x"), v)

      const text = yield* Prometheus.text
      const families = parse(text)

      const counter = families.get("test_prom_requests_total")!
      expect(counter).toMatchObject({ type: "counter", help: "Requests\nserved, with \\ in it" })
      expect(valueOf(families, "test_prom_requests_total", { path: awkward })).toBe(1)
      expect(valueOf(families, "test_prom_requests_total", { path: "/ok" })).toBe(2)
      expect(text).toContain(String.raw`test_prom_requests_total{path="a \"quoted\" back\\slash\nnew line"} 1`)
      expect(families.get("test_prom_level")).toMatchObject({ type: "gauge" })
      expect(valueOf(families, "test_prom_level")).toBe(3)
      expect(families.get("test_prom_temperature")).toMatchObject({ type: "gauge", help: "" })
      expect(valueOf(families, "test_prom_temperature")).toBe(-1.5)

      expect(families.get("test_prom_latency_seconds")).toMatchObject({ type: "histogram", help: "Latency" })
      const bucket = (le: string) => valueOf(families, "test_prom_latency_seconds_bucket", { op: "x", le })
      expect([bucket("0.1"), bucket("1"), bucket("10"), bucket("+Inf")]).toEqual([1, 3, 4, 5])
      expect(valueOf(families, "test_prom_latency_seconds_count", { op: "x" })).toBe(5)
      expect(valueOf(families, "test_prom_latency_seconds_sum", { op: "x" })).toBeCloseTo(56.05)
    }))

  it.effect("the node's own metrics render and parse", () =>
    Effect.gen(function*() {
      Metrics.calls.unsafeUpdate(1, new Metrics.Labels2("operation", "code").get("test/op", "OK"))
      Metrics.callDuration.unsafeUpdate(0.002, new Metrics.Labels("operation").get("test/op"))
      const families = parse(yield* Prometheus.text)
      expect(families.get("alknet_calls_total")?.type).toBe("counter")
      expect(families.get("alknet_call_duration_seconds")?.type).toBe("histogram")
      expect(valueOf(families, "alknet_call_duration_seconds_bucket", { operation: "test/op", le: "0.0025" })).toBeGreaterThanOrEqual(1)
    }))

  it.effect("names and label names are made valid; special values are written as the format says", () =>
    Effect.gen(function*() {
      expect([Infinity, -Infinity, NaN, 12n, 0.25].map(Prometheus.formatValue)).toEqual(["+Inf", "-Inf", "NaN", "12", "0.25"])
      yield* Metric.set(Metric.tagged(Metric.gauge("9-test.prom gauge"), "bad-label", "v"), Infinity)
      const text = yield* Prometheus.text
      expect(text).toContain(`_9_test_prom_gauge{bad_label="v"} +Inf\n`)
      expect(valueOf(parse(text), "_9_test_prom_gauge", { bad_label: "v" })).toBe(Infinity)
    }))

  it.effect("summaries (quantiles, _sum, _count) and frequencies (a counter per value)", () =>
    Effect.gen(function*() {
      const sizes = Metric.summary({ name: "test_prom_sizes", maxAge: "1 hour", maxSize: 100, error: 0.01, quantiles: [0.5, 0.9] })
      const kinds = Metric.frequency("test_prom_kinds", { description: "Kinds seen" })
      for (const v of [1, 2, 3, 4]) yield* Metric.update(sizes, v)
      for (const k of ["a", "b", "a", "quo\"te"]) yield* Metric.update(kinds, k)
      const families = parse(yield* Prometheus.text)
      expect(families.get("test_prom_sizes")?.type).toBe("summary")
      expect(valueOf(families, "test_prom_sizes_count")).toBe(4)
      expect(valueOf(families, "test_prom_sizes_sum")).toBe(10)
      expect(valueOf(families, "test_prom_sizes", { quantile: "0.5" })).toBeGreaterThanOrEqual(2)
      expect(families.get("test_prom_kinds_total")).toMatchObject({ type: "counter", help: "Kinds seen" })
      expect(valueOf(families, "test_prom_kinds_total", { key: "a" })).toBe(2)
      expect(valueOf(families, "test_prom_kinds_total", { key: "quo\"te" })).toBe(1)
    }))

  it("the test's parser rejects what a scraper would misread", () => {
    const ok = "# HELP x_total x\n# TYPE x_total counter\nx_total{a=\"1\"} 1\n"
    expect(() => parse(ok)).not.toThrow()
    expect(() => parse("# TYPE x counter\nx 1\n")).toThrow(/_total/)
    expect(() => parse("x_total{a=\"\\q\"} 1\n")).toThrow(/escape/)
    expect(() => parse("a 1\nb 1\na 2\n")).toThrow(/contiguous/)
    expect(() => parse("a 1\na 2\n")).toThrow(/duplicate/)
    expect(() => parse("# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n")).toThrow(/cumulative/)
    expect(() => parse("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n")).toThrow(/Inf/)
    expect(() => parse("a one\n")).toThrow(/value/)
  })
})
