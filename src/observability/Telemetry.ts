/**
 * Export of traces, metrics and logs over OTLP/HTTP (JSON), with `@effect/opentelemetry`'s OTLP exporters: no
 * OpenTelemetry SDK runs in the node, the exporters read Effect's spans, metrics and logs directly.
 *
 * Off unless configured: by the config file's `telemetry` section, else by the standard variables
 * `OTEL_EXPORTER_OTLP_ENDPOINT` (base URL; `/v1/traces`, `/v1/metrics`, `/v1/logs` are appended),
 * `OTEL_SERVICE_NAME` and `OTEL_EXPORTER_OTLP_HEADERS` (`key=value,key2=value2`, e.g. a collector's API key; kept
 * `Redacted`). An embedding program may instead provide any tracer of its own (e.g. `NodeSdk.layer`): the node's
 * spans go to whatever `Tracer` its fibers run with.
 */
import { Duration, Effect, Layer, Option, Redacted } from "effect"

export interface Options {
  /** The collector's base URL, e.g. `http://127.0.0.1:4318`. */
  readonly endpoint: string
  /** `service.name` of the resource (default `alknet`). */
  readonly serviceName?: string | undefined
  /** Headers sent with every export (e.g. an API key); secret. */
  readonly headers?: Readonly<Record<string, Redacted.Redacted<string>>> | undefined
  /** How often spans, metrics and logs are sent (default 5 s). */
  readonly exportInterval?: Duration.DurationInput | undefined
}

/** The config file's `telemetry` section (see `schema/Config.ts`). */
export interface ConfigSection {
  readonly otlp_endpoint?: string | undefined
  readonly service_name?: string | undefined
  readonly export_interval_ms?: number | undefined
}

/** `OTEL_EXPORTER_OTLP_HEADERS`: `k=v` pairs separated by commas, values URL-encoded (OpenTelemetry's format). */
export const parseHeaders = (text: string | undefined): Record<string, Redacted.Redacted<string>> => {
  const headers: Record<string, Redacted.Redacted<string>> = {}
  for (const pair of (text ?? "").split(",")) {
    const at = pair.indexOf("=")
    if (at <= 0) continue
    const key = pair.slice(0, at).trim().toLowerCase()
    let value = pair.slice(at + 1).trim()
    try {
      value = decodeURIComponent(value)
    } catch {
      // a value that is not URL-encoded is taken as it is
    }
    if (key !== "") headers[key] = Redacted.make(value)
  }
  return headers
}

/**
 * What to export to, from the config section first, then the environment; `None` when neither names an endpoint
 * (telemetry off).
 */
export const resolve = (
  section: ConfigSection | undefined,
  env: Readonly<Record<string, string | undefined>>
): Option.Option<Options> => {
  const endpoint = section?.otlp_endpoint ?? nonEmpty(env.OTEL_EXPORTER_OTLP_ENDPOINT)
  if (endpoint === undefined) return Option.none()
  return Option.some({
    endpoint,
    serviceName: section?.service_name ?? nonEmpty(env.OTEL_SERVICE_NAME) ?? "alknet",
    headers: parseHeaders(env.OTEL_EXPORTER_OTLP_HEADERS),
    ...(section?.export_interval_ms === undefined ? {} : { exportInterval: Duration.millis(section.export_interval_ms) })
  })
}

const nonEmpty = (s: string | undefined) => (s === undefined || s.trim() === "" ? undefined : s.trim())

/**
 * The exporters as a layer: provide it to the program that runs the node (it sets the tracer, adds a metrics reader
 * and a logger that exports). Spans, metrics and logs still buffered are sent when its scope closes.
 */
export const layer = (options: Options): Layer.Layer<never> => {
  const interval = options.exportInterval ?? Duration.seconds(5)
  const headers: Record<string, string> = {}
  for (const [key, value] of Object.entries(options.headers ?? {})) headers[key] = Redacted.value(value)
  // The exporters load only when telemetry is on.
  return Layer.unwrapEffect(Effect.map(
    Effect.promise(() => Promise.all([import("@effect/opentelemetry/Otlp"), import("@effect/platform-node/NodeHttpClient")])),
    ([Otlp, NodeHttpClient]) =>
      Otlp.layerJson({
        baseUrl: options.endpoint.replace(/\/+$/, ""),
        resource: { serviceName: options.serviceName ?? "alknet" },
        headers,
        tracerExportInterval: interval,
        metricsExportInterval: interval,
        loggerExportInterval: interval,
        shutdownTimeout: Duration.seconds(3)
      }).pipe(Layer.provide(NodeHttpClient.layerUndici))
  ))
}
