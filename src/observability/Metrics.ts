/**
 * The node's metrics, as Effect `Metric`s: exported through OTLP when telemetry is configured (`Telemetry.ts`) and as
 * Prometheus text at `GET /metrics` (`Prometheus.ts`).
 *
 * The hot path updates metrics with `unsafeUpdate` and label arrays cached per value: Effect caches a metric's hook per
 * label-array identity, so a cached array costs one WeakMap lookup per update instead of hashing a new key. Label
 * values that come from the wire (operation names) are bounded: an operation the node does not serve is counted as
 * `(unknown)`, and past `maxLabelValues` distinct names the rest are `(other)` — a caller cannot grow the registry.
 *
 * Effect's metric registry is global to the process: nodes embedded in one process share these series.
 */
import { Metric, MetricBoundaries, MetricLabel } from "effect"

/** Calls served, by `operation` and `code` (`OK`, a protocol or declared error code, or `ABORTED`). */
export const calls = Metric.counter("alknet_calls_total", {
  description: "Calls served, by operation and result code (OK, an error code, or ABORTED)",
  incremental: true
})

/** Time to serve a call (a subscription: until it ends), in seconds, by `operation`. */
export const callDuration = Metric.histogram(
  "alknet_call_duration_seconds",
  MetricBoundaries.fromIterable([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]),
  "Time to serve a call, in seconds (a subscription: until it ends), by operation"
)

/** Calls being served now. */
export const callsInFlight = Metric.gauge("alknet_calls_in_flight", {
  description: "Calls being served now"
})

/** Open call-protocol connections, by `transport` (`quic`, `ws`, `memory`, `ssh`). */
export const connections = Metric.gauge("alknet_connections", {
  description: "Open call-protocol connections, by transport"
})

/** Outbound peer links, by `state` (`connecting`, `connected`, `reconnecting`, `failed`, as `node/info` says): how many links are in each. */
export const peerLinks = Metric.gauge("alknet_peer_links", {
  description: "Outbound peer links by state"
})

/** Store reloads (peers, API keys, config), by `store` and `result` (`ok`, `failed`). */
export const storeReloads = Metric.counter("alknet_store_reloads_total", {
  description: "Reloads of a live store (peers, API keys, config), by store and result",
  incremental: true
})

/** Authentication failures (unknown or revoked tokens, refused upgrades), by `transport`. */
export const authFailures = Metric.counter("alknet_auth_failures_total", {
  description: "Authentication failures (unknown, revoked or expired tokens), by transport",
  incremental: true
})

/** Distinct operation label values kept before the rest are counted as `(other)`. */
export const maxLabelValues = 1000

/** Label arrays cached by value, so every update of one series passes the same array (see the module comment). */
export class Labels {
  private readonly cache = new Map<string, ReadonlyArray<MetricLabel.MetricLabel>>()
  private readonly other: ReadonlyArray<MetricLabel.MetricLabel>

  constructor(private readonly key: string, private readonly limit = maxLabelValues) {
    this.other = [MetricLabel.make(key, "(other)")]
  }

  get(value: string): ReadonlyArray<MetricLabel.MetricLabel> {
    let labels = this.cache.get(value)
    if (labels !== undefined) return labels
    if (this.cache.size >= this.limit) return this.other
    labels = [MetricLabel.make(this.key, value)]
    this.cache.set(value, labels)
    return labels
  }
}

/** Two-label arrays (e.g. operation × code), cached the same way. */
export class Labels2 {
  private readonly cache = new Map<string, Map<string, ReadonlyArray<MetricLabel.MetricLabel>>>()
  private readonly first: Labels

  constructor(key1: string, private readonly key2: string, limit = maxLabelValues) {
    this.first = new Labels(key1, limit)
  }

  get(value1: string, value2: string): ReadonlyArray<MetricLabel.MetricLabel> {
    const [label1] = this.first.get(value1)
    const bounded = label1!.value
    let inner = this.cache.get(bounded)
    if (inner === undefined) {
      inner = new Map()
      this.cache.set(bounded, inner)
    }
    let labels = inner.get(value2)
    if (labels === undefined) {
      labels = [label1!, MetricLabel.make(this.key2, value2)]
      inner.set(value2, labels)
    }
    return labels
  }
}

/** No labels (one shared array, so its hook is cached too). */
export const none: ReadonlyArray<MetricLabel.MetricLabel> = []

/** The `operation` label of a served call, shared by every connection and the gateway. */
export const operation = new Labels("operation")

/** The `operation` × `code` labels of `alknet_calls_total`. */
export const operationCode = new Labels2("operation", "code")
