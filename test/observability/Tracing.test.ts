/**
 * Trace context across the wire: spans recorded by the OpenTelemetry SDK (in-memory exporter) through
 * `@effect/opentelemetry`, as an embedding program would set it up. Three nodes (client → head → worker) share one
 * trace; a composed call is a child span; aborts mark the worker's span; malformed `traceparent`s are ignored; and
 * with tracing off no span is made yet the caller's context is forwarded.
 */
import { describe, expect, it } from "@effect/vitest"
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base"
import { Deferred, Effect, Fiber, Metric, Option, Redacted, Schema, Tracer } from "effect"
import type { Connection } from "../../src/call/Connection.js"
import * as CallClient from "../../src/layers/Client.js"
import * as Metrics from "../../src/observability/Metrics.js"
import * as Tracing from "../../src/observability/Tracing.js"
import * as Operation from "../../src/services/Operation.js"
import * as Tls from "../../src/services/Tls.js"
import * as CallHarness from "../call/harness.js"
import * as H from "../peer/harness.js"
import { finished, Kind, recording } from "../shared/spans.js"

const { CLIENT, INTERNAL, SERVER } = Kind

const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId

/** The chain of ancestors of `span` among the recorded spans, nearest first. */
const ancestors = (spans: ReadonlyArray<ReadableSpan>, span: ReadableSpan) => {
  const byId = new Map(spans.map((s) => [s.spanContext().spanId, s]))
  const chain: Array<ReadableSpan> = []
  for (let at = byId.get(parentOf(span) ?? ""); at !== undefined; at = byId.get(parentOf(at) ?? "")) chain.push(at)
  return chain
}

/** A counter's value in the global registry, by its labels (as a set). */
const counted = (name: string, labels: Record<string, string>) =>
  Effect.map(Metric.snapshot, (pairs) => {
    for (const pair of pairs) {
      if (pair.metricKey.name !== name) continue
      const tags = Object.fromEntries(pair.metricKey.tags.map((t) => [t.key, t.value]))
      if (Object.entries(labels).every(([k, v]) => tags[k] === v) && Object.keys(tags).length === Object.keys(labels).length) {
        return (pair.metricState as unknown as { count: number }).count
      }
    }
    return 0
  })

/** A head, a worker that dialed it, and a client of the head (over WebSocket), for the scope. */
const threeNodes = Effect.gen(function*() {
  const head = yield* H.startHead(H.webSocket)
  const worker = yield* H.startWorker("worker-a", head)
  yield* Effect.addFinalizer(() => worker.kill)
  yield* head.graph.awaitPeer("worker-a")
  const client = yield* CallClient.connect(head.url, {
    identity: Tls.RawKey(H.seeds.client),
    expectedFingerprint: head.fingerprint
  })
  return { client, worker }
})

describe("trace context across client → head → worker", () => {
  it.live("one trace id across the three nodes, each span the child of the one before", () => {
    const { exporter, layer } = recording()
    return Effect.gen(function*() {
      const { client } = yield* threeNodes
      const output = yield* client.call("head/exec", { peer: "worker-a", cmd: "uptime" }).pipe(Effect.withSpan("test/root"))
      expect(output).toMatchObject({ worker: "worker-a", cmd: "uptime" })

      const workerSpan = yield* finished(exporter, (s) => s.name === "container/exec" && s.kind === SERVER)
      const root = yield* finished(exporter, (s) => s.name === "test/root")
      const spans = exporter.getFinishedSpans()
      const chain = ancestors(spans, workerSpan)
      // Every span of the call is in the root's trace.
      for (const span of [workerSpan, ...chain]) expect(span.spanContext().traceId).toBe(root.spanContext().traceId)
      const steps = chain.map((s) => `${s.kind}:${s.name}`)
      // Nearest first: the head's outgoing call to the worker, ..., the head's served call, the client's call, the root.
      expect(steps[0]).toBe(`${CLIENT}:container/exec`)
      expect(steps.slice(-3)).toEqual([`${SERVER}:head/exec`, `${CLIENT}:head/exec`, `${INTERNAL}:test/root`])
      // The served spans name their caller (an identity id, never a token) and how the call ended.
      expect(workerSpan.attributes["alknet.caller"]).toBe("head")
      expect(workerSpan.attributes["alknet.code"]).toBe("OK")
      const headSpan = chain.find((s) => s.kind === SERVER)!
      expect(headSpan.attributes["alknet.caller"]).toBe("client")
      expect(headSpan.attributes["rpc.method"]).toBe("head/exec")
    }).pipe(Effect.provide(layer), Effect.scoped)
  })

  it.live("the worker's span is marked ABORTED when the client aborts, and the error code is recorded", () => {
    const { exporter, layer } = recording()
    return Effect.gen(function*() {
      const { client, worker } = yield* threeNodes
      const before = yield* counted("alknet_calls_total", { operation: "container/hang", code: "ABORTED" })
      const fiber = yield* Effect.fork(client.call("head/hang", { peer: "worker-a", cmd: "x" }))
      yield* Deferred.await(worker.probe.started)
      yield* Fiber.interrupt(fiber)
      const hung = yield* finished(exporter, (s) => s.name === "container/hang" && s.kind === SERVER)
      expect(hung.attributes["alknet.code"]).toBe("ABORTED")
      expect(hung.attributes["status.interrupted"]).toBe(true)
      const headHang = yield* finished(exporter, (s) => s.name === "head/hang" && s.kind === SERVER)
      expect(headHang.spanContext().traceId).toBe(hung.spanContext().traceId)
      expect(yield* counted("alknet_calls_total", { operation: "container/hang", code: "ABORTED" })).toBe(before + 1)

      // A declared error: the span is an error with its code.
      yield* Effect.flip(client.call("head/fail", { peer: "worker-a", cmd: "x" }))
      const failed = yield* finished(exporter, (s) => s.name === "container/fail" && s.kind === SERVER)
      expect(failed.attributes["alknet.code"]).toBe("NOT_READY")
      expect(failed.status.code).toBe(2) // ERROR
    }).pipe(Effect.provide(layer), Effect.scoped)
  })
})

const inner = Operation.query({
  name: "trace/inner",
  input: Schema.Unknown,
  output: Schema.Unknown,
  handler: () =>
    // What the handler runs under: with tracing off, the caller's span from the wire (forwarded as it came).
    Effect.map(Effect.serviceOption(Tracer.ParentSpan), (span) =>
      Option.match(span, {
        onNone: () => null,
        // what a call made here would send on: its traceparent's trace, and the tracestate it arrived with
        onSome: (s) => ({ traceId: s.traceId, spanId: s.spanId, tag: s._tag, tracestate: Tracing.tracestateOf(s) ?? null })
      }))
})
const echo = Operation.query({
  name: "trace/echo",
  input: Schema.Unknown,
  output: Schema.Unknown,
  handler: (input) => Effect.succeed(input)
})
const outer = Operation.query({
  name: "trace/outer",
  input: Schema.Unknown,
  output: Schema.Unknown,
  handler: (_, ctx) => ctx.env.invoke("trace/inner", {})
}).with({ env: ["trace/inner"] })
const failing = Operation.query({
  name: "trace/failing",
  input: Schema.Unknown,
  output: Schema.Unknown,
  handler: () => Effect.die("boom")
})

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
const PARENT = "00f067aa0ba902b7"

describe("spans and metrics of one connection", () => {
  it.live("a composed call is a child span of its parent", () => {
    const { exporter, layer } = recording()
    return Effect.gen(function*() {
      const pair = yield* CallHarness.makePair([inner, outer])
      yield* pair.client.call("trace/outer", {})
      const child = yield* finished(exporter, (s) => s.name === "trace/inner")
      const parent = yield* finished(exporter, (s) => s.name === "trace/outer" && s.kind === SERVER)
      expect(child.kind).toBe(INTERNAL)
      expect(parentOf(child)).toBe(parent.spanContext().spanId)
      expect(child.spanContext().traceId).toBe(parent.spanContext().traceId)
    }).pipe(Effect.provide(layer), Effect.scoped)
  })

  it.live("a served span names its caller and the bytes in and out, and never carries the token", () => {
    const { exporter, layer } = recording()
    const token = "alk_T0ke-n-that-must-not-leak"
    return Effect.gen(function*() {
      const pair = yield* CallHarness.makePair([echo, inner], {
        server: {
          resolveToken: (t) => Effect.succeed(Redacted.value(t) === token ? CallHarness.who("alk_T0ke") : Option.none())
        },
        client: { authToken: Redacted.make(token) }
      })
      expect(yield* pair.client.call("trace/echo", { hello: "world" })).toEqual({ hello: "world" })
      const span = yield* finished(exporter, (s) => s.name === "trace/echo" && s.kind === SERVER)
      expect(span.attributes["alknet.caller"]).toBe("alk_T0ke")
      expect(span.attributes["alknet.request.bytes"]).toBe(Buffer.byteLength(JSON.stringify({ hello: "world" })))
      expect(span.attributes["alknet.response.bytes"]).toBe(Buffer.byteLength(JSON.stringify({ hello: "world" })))
      for (const recorded of exporter.getFinishedSpans()) {
        const { attributes, events, name, status } = recorded
        expect(JSON.stringify({ attributes, events, name, status })).not.toContain("n-that-must-not-leak")
      }
    }).pipe(Effect.provide(layer), Effect.scoped)
  })

  it.live("a traceparent on the wire is the parent of the served span; its tracestate is kept", () => {
    const { exporter, layer } = recording()
    return Effect.gen(function*() {
      const pair = yield* CallHarness.makePair([inner, outer])
      const answer = yield* CallHarness.rawCall(pair.transports[1], {
        operationId: "/trace/inner",
        input: null,
        traceparent: `00-${TRACE}-${PARENT}-01`,
        tracestate: "vendor=abc"
      })
      expect(answer.type).toBe("call.responded")
      const span = yield* finished(exporter, (s) => s.name === "trace/inner")
      expect(span.spanContext().traceId).toBe(TRACE)
      expect(parentOf(span)).toBe(PARENT)
      // The handler runs under the served span; calls it makes send the same trace and the caller's tracestate.
      expect(answer.payload.output).toEqual({
        traceId: TRACE,
        spanId: span.spanContext().spanId,
        tag: "Span",
        tracestate: "vendor=abc"
      })
    }).pipe(Effect.provide(layer), Effect.scoped)
  })

  it.live("malformed traceparents are ignored: the call succeeds in a new trace", () => {
    const { exporter, layer } = recording()
    const malformed = [
      "garbage",
      `00-${TRACE}-${PARENT}`, // no flags
      `00-${TRACE.toUpperCase()}-${PARENT}-01`, // upper case
      `00-${"0".repeat(32)}-${PARENT}-01`, // all-zero trace id
      `00-${TRACE}-${"0".repeat(16)}-01`, // all-zero parent id
      `ff-${TRACE}-${PARENT}-01`, // forbidden version
      `00-${TRACE}-${PARENT}-zz`, // flags not hex
      `00-${TRACE}-${PARENT}-01-extra`, // version 00 has exactly four fields
      42,
      { traceId: TRACE }
    ]
    return Effect.gen(function*() {
      const pair = yield* CallHarness.makePair([inner])
      for (const [i, traceparent] of malformed.entries()) {
        const answer = yield* CallHarness.rawCall(pair.transports[1], { operationId: "/trace/inner", input: null, traceparent })
        expect(answer.type, `traceparent ${JSON.stringify(traceparent)}`).toBe("call.responded")
        yield* finished(exporter, () => exporter.getFinishedSpans().length === i + 1)
      }
      const spans = exporter.getFinishedSpans()
      expect(spans).toHaveLength(malformed.length)
      for (const span of spans) {
        expect(span.spanContext().traceId).not.toBe(TRACE)
        expect(parentOf(span)).toBeUndefined()
      }
    }).pipe(Effect.provide(layer), Effect.scoped)
  })

  it.live("calls are counted by operation and code (ok, error), with their latency", () =>
    Effect.gen(function*() {
      const pair = yield* CallHarness.makePair([inner, failing])
      const ok = yield* counted("alknet_calls_total", { operation: "trace/inner", code: "OK" })
      const internal = yield* counted("alknet_calls_total", { operation: "trace/failing", code: "INTERNAL" })
      const unknown = yield* counted("alknet_calls_total", { operation: "(unknown)", code: "NOT_FOUND" })
      yield* pair.client.call("trace/inner", {})
      yield* pair.client.call("trace/inner", {})
      yield* Effect.flip(pair.client.call("trace/failing", {}))
      yield* Effect.flip(pair.client.call("no/such-operation", {}))
      expect(yield* counted("alknet_calls_total", { operation: "trace/inner", code: "OK" })).toBe(ok + 2)
      expect(yield* counted("alknet_calls_total", { operation: "trace/failing", code: "INTERNAL" })).toBe(internal + 1)
      // A name the node does not serve is one series, whatever the caller sent.
      expect(yield* counted("alknet_calls_total", { operation: "(unknown)", code: "NOT_FOUND" })).toBe(unknown + 1)
      const latency = yield* Metric.value(Metrics.callDuration)
      expect(latency.count).toBeGreaterThan(0)
    }).pipe(Effect.scoped, Effect.ignoreLogged))
})

describe("tracing off (Effect's default tracer)", () => {
  it.live("no span is made, yet the caller's trace context reaches the next node unchanged", () =>
    Effect.gen(function*() {
      // far ← middle ← caller: the middle node's handler calls the far node over a second connection.
      const far = yield* CallHarness.makePair([inner])
      const forward = Operation.query({
        name: "trace/forward",
        input: Schema.Unknown,
        output: Schema.Unknown,
        handler: () => Effect.orDie((far.client as Connection).call("trace/inner", {}))
      })
      const middle = yield* CallHarness.makePair([forward])
      const answer = yield* CallHarness.rawCall(middle.transports[1], {
        operationId: "/trace/forward",
        input: null,
        traceparent: `00-${TRACE}-${PARENT}-01`
      })
      // The far handler runs under the caller's span itself: no span was made in between.
      expect(answer.payload.output).toEqual({ traceId: TRACE, spanId: PARENT, tag: "ExternalSpan", tracestate: null })
      // Without a traceparent there is no span at all.
      const plain = yield* CallHarness.rawCall(middle.transports[1], { operationId: "/trace/forward", input: null })
      expect(plain.payload.output).toBeNull()
    }).pipe(Effect.scoped))
})

describe("Tracing.parse", () => {
  it("accepts W3C traceparents of version 00 and later versions with extra fields", () => {
    const span = Tracing.parse(`00-${TRACE}-${PARENT}-00`, "a=1")!
    expect(span).toMatchObject({ traceId: TRACE, spanId: PARENT, sampled: false })
    expect(Tracing.tracestateOf(span)).toBe("a=1")
    expect(Tracing.parse(`01-${TRACE}-${PARENT}-01-future`)).toMatchObject({ traceId: TRACE, sampled: true })
    expect(Tracing.parse(undefined)).toBeUndefined()
    expect(Tracing.parse(`00-${TRACE}-${PARENT}-01`, "x".repeat(10_000))).toMatchObject({ traceId: TRACE })
    expect(Tracing.tracestateOf(Tracing.parse(`00-${TRACE}-${PARENT}-01`, "x".repeat(10_000))!)).toBeUndefined()
  })
})
