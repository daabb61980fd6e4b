/**
 * The process's Effect metrics (`Metric.snapshot`) in the Prometheus text exposition format 0.0.4, as `GET /metrics`
 * serves it (`layers/http/Gateway`).
 *
 * - an incremental counter is a `counter` whose name ends in `_total` (added when missing); a counter that may go
 *   down is a `gauge`; a gauge is a `gauge`;
 * - a histogram is a `histogram`: cumulative `NAME_bucket{le="…"}` up to `le="+Inf"`, then `NAME_sum`, `NAME_count`;
 * - a summary is a `summary` (`quantile` labels, `_sum`, `_count`); a frequency is a counter `NAME_total{key="…"}`;
 * - every family has its `# HELP` (the metric's description) and `# TYPE` line, and all its series together;
 * - names are made valid (`[a-zA-Z_:][a-zA-Z0-9_:]*`, labels without `:`), label values and help text escaped
 *   (`\\`, `\"`, `\n`).
 *
 * Written here rather than borrowed: @effect/opentelemetry has no Prometheus output, and
 * @opentelemetry/exporter-prometheus would need a dependency and a conversion to OpenTelemetry's data model for the
 * same ~100 lines (and labels every metric with unit `1`).
 */
import { Effect, Metric, MetricKeyType, MetricState, Option } from "effect"
import type { MetricLabel, MetricPair } from "effect"

/** The `Content-Type` of the text format. */
export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

type FamilyType = "counter" | "gauge" | "histogram" | "summary"

interface Family {
  readonly type: FamilyType
  readonly help: string
  readonly lines: Array<string>
}

const metricName = (name: string) => {
  const valid = name.replace(/[^a-zA-Z0-9_:]/g, "_")
  return /^[0-9]/.test(valid) ? `_${valid}` : valid
}
const labelName = (name: string) => {
  const valid = name.replace(/[^a-zA-Z0-9_]/g, "_")
  return /^[0-9]/.test(valid) || valid === "" ? `_${valid}` : valid
}
const escapeHelp = (text: string) => text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")
const escapeValue = (text: string) => (/[\\"\n]/.test(text) ? escapeHelp(text).replace(/"/g, "\\\"") : text)

/** A sample value: `+Inf`, `-Inf`, `NaN`, or the number. */
export const formatValue = (value: number | bigint): string =>
  typeof value === "bigint"
    ? value.toString()
    : Number.isNaN(value)
    ? "NaN"
    : value === Infinity
    ? "+Inf"
    : value === -Infinity
    ? "-Inf"
    : String(value)

/** A series' labels, rendered once (`a="x",b="y"`), for each of its samples. */
const renderLabels = (tags: ReadonlyArray<MetricLabel.MetricLabel>) =>
  tags.map((tag) => `${labelName(tag.key)}="${escapeValue(tag.value)}"`).join(",")

/** One sample line; `extra` is one more label, already rendered (`le="0.5"`). */
const sample = (name: string, labels: string, value: number | bigint, extra?: string) => {
  const all = extra === undefined ? labels : labels === "" ? extra : `${labels},${extra}`
  return `${name}${all === "" ? "" : `{${all}}`} ${formatValue(value)}`
}

const withTotal = (name: string) => (name.endsWith("_total") ? name : `${name}_total`)

/** The family one metric belongs to and its samples, or `undefined` for a kind the format has no place for. */
const describe = (
  pair: MetricPair.MetricPair.Untyped
): { readonly name: string; readonly type: FamilyType; readonly lines: ReadonlyArray<string> } | undefined => {
  const { metricKey: key, metricState: state } = pair
  const base = metricName(key.name)
  const tags = renderLabels(key.tags)
  if (MetricKeyType.isCounterKey(key.keyType) && MetricState.isCounterState(state)) {
    return key.keyType.incremental
      ? { name: withTotal(base), type: "counter", lines: [sample(withTotal(base), tags, state.count)] }
      : { name: base, type: "gauge", lines: [sample(base, tags, state.count)] }
  }
  if (MetricState.isGaugeState(state)) return { name: base, type: "gauge", lines: [sample(base, tags, state.value)] }
  if (MetricState.isHistogramState(state)) {
    const lines: Array<string> = []
    let infinite = false
    for (const [bound, cumulative] of state.buckets) {
      if (bound === Infinity) infinite = true
      lines.push(sample(`${base}_bucket`, tags, cumulative, `le="${formatValue(bound)}"`))
    }
    if (!infinite) lines.push(sample(`${base}_bucket`, tags, state.count, `le="+Inf"`))
    lines.push(sample(`${base}_sum`, tags, state.sum), sample(`${base}_count`, tags, state.count))
    return { name: base, type: "histogram", lines }
  }
  if (MetricState.isSummaryState(state)) {
    const lines = state.quantiles.map(([quantile, value]) =>
      sample(base, tags, Option.getOrElse(value, () => NaN), `quantile="${formatValue(quantile)}"`)
    )
    lines.push(sample(`${base}_sum`, tags, state.sum), sample(`${base}_count`, tags, state.count))
    return { name: base, type: "summary", lines }
  }
  if (MetricState.isFrequencyState(state)) {
    const name = withTotal(base)
    return { name, type: "counter", lines: [...state.occurrences].map(([word, n]) => sample(name, tags, n, `key="${escapeValue(word)}"`)) }
  }
  return undefined
}

/**
 * Render metric pairs as one exposition. Series of one family are grouped under its HELP / TYPE lines (the first
 * description seen is its help); a metric whose name clashes with a family of another type is left out.
 */
export const render = (pairs: Iterable<MetricPair.MetricPair.Untyped>): string => {
  const families = new Map<string, Family>()
  for (const pair of pairs) {
    const described = describe(pair)
    if (described === undefined) continue
    let family = families.get(described.name)
    if (family === undefined) {
      family = { type: described.type, help: Option.getOrElse(pair.metricKey.description, () => ""), lines: [] }
      families.set(described.name, family)
    } else if (family.type !== described.type) {
      continue
    }
    family.lines.push(...described.lines)
  }
  let text = ""
  for (const [name, family] of families) {
    text += `# HELP ${name} ${escapeHelp(family.help)}\n# TYPE ${name} ${family.type}\n${family.lines.join("\n")}\n`
  }
  return text
}

/** The process's metrics now, rendered. */
export const text: Effect.Effect<string> = Effect.map(Metric.snapshot, render)
