/**
 * A node's configuration file (SPEC §11): one JSON object with snake_case keys, like the wire.
 *
 * - **Static** fields (`listen`, `tls`, `drain_timeout_ms`, `data_dir`, `list_peers`, `ssh`, `store`, `metrics`,
 *   `log_format`, `http_listen`, `http_tls`, `telemetry`) are read once at start; changing them needs a restart.
 * - **Dynamic** fields (`peers`, `api_keys`, `rate_limits`, `outbound`, `imports`) are reloaded while the node runs.
 *
 * Every field is optional; `{}` is a valid config. Unknown keys are rejected (a typo must not silently fall back to
 * a default). Decode errors name the field: `peers[1].fingerprints[0]: expected a fingerprint …`. A document nested
 * deeper than 64 levels is rejected before decoding (no part of the decoder recurses without bound).
 */
import { Either, ParseResult, Schema } from "effect"
import { echo } from "../errors/CallError.js"
import { ApiKeyEntry } from "./ApiKeyEntry.js"
import * as HdPath from "./HdPath.js"
import * as Json from "./Json.js"
import { Fingerprint, PeerEntry, PeerId } from "./PeerEntry.js"

/** `host:port`; IPv6 hosts in brackets (`[::1]:4433`). */
export const ListenAddress = Schema.transformOrFail(
  Schema.String,
  Schema.Struct({ host: Schema.String, port: Schema.Int.pipe(Schema.between(0, 65535)) }),
  {
    strict: true,
    decode: (text, _, ast) => {
      const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(text)
      const port = Number(match?.[3])
      return match !== null && port <= 65535
        ? ParseResult.succeed({ host: match[1] ?? match[2] ?? "", port })
        : ParseResult.fail(new ParseResult.Type(ast, text, "expected host:port, e.g. 0.0.0.0:4433 or [::1]:4433"))
    },
    encode: ({ host, port }) => ParseResult.succeed(host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`)
  }
).annotations({ identifier: "ListenAddress" })
export type ListenAddress = typeof ListenAddress.Type

/**
 * The node's TLS identity (SPEC §3).
 * - `raw_key`: an Ed25519 key presented in a self-signed certificate; `key_file` is a PKCS#8 PEM private key, and
 *   when it is absent the key is the vault's node identity key (`m/74'/0'/0'/0'`).
 * - `x509`: certificate chain and private key, PEM files.
 * - `self_signed`: a fresh key and certificate generated at every start (its fingerprint changes on restart).
 */
export const TlsIdentity = Schema.Union(
  Schema.Struct({
    type: Schema.Literal("raw_key"),
    key_file: Schema.optionalWith(Schema.NonEmptyString, { exact: true })
  }),
  Schema.Struct({ type: Schema.Literal("x509"), cert_file: Schema.NonEmptyString, key_file: Schema.NonEmptyString }),
  Schema.Struct({ type: Schema.Literal("self_signed") })
).annotations({ identifier: "TlsIdentity" })
export type TlsIdentity = typeof TlsIdentity.Type

const PositiveInt = Schema.Int.pipe(Schema.greaterThanOrEqualTo(1))

export const RateLimits = Schema.Struct({
  /** Concurrent connections accepted from one IP address. */
  max_connections_per_ip: Schema.optionalWith(PositiveInt, { default: () => 100, exact: true }),
  /** Failed token resolutions on one connection before it is closed. */
  max_auth_attempts: Schema.optionalWith(PositiveInt, { default: () => 5, exact: true }),
  /**
   * Failed authentications (a bearer token on a WebSocket upgrade or a request's `auth_token` that resolves to nobody)
   * from one address within `auth_failure_window_ms` before that address is refused for `auth_block_ms`. An IPv6
   * address counts with its /64.
   */
  max_auth_failures_per_ip: Schema.optionalWith(PositiveInt, { default: () => 10, exact: true }),
  /** The sliding window `max_auth_failures_per_ip` is counted over. */
  auth_failure_window_ms: Schema.optionalWith(PositiveInt, { default: () => 60_000, exact: true }),
  /** How long an address that reached `max_auth_failures_per_ip` is refused (new connections and upgrades). */
  auth_block_ms: Schema.optionalWith(PositiveInt, { default: () => 300_000, exact: true }),
  /** Calls served at once on one connection; past it a request is answered `OVERLOADED` (retryable). */
  max_calls_per_connection: Schema.optionalWith(PositiveInt, { default: () => 256, exact: true }),
  /** Calls served at once for one caller (an identity, or an anonymous remote address) across its connections. */
  max_calls_per_caller: Schema.optionalWith(PositiveInt, { default: () => 1024, exact: true }),
  /** The largest deadline a caller may ask for with `timeout_ms`, in ms (larger ones are capped). */
  max_call_timeout_ms: Schema.optionalWith(PositiveInt, { default: () => 600_000, exact: true }),
  /** How long a subscription served to an anonymous caller may run, in ms (authenticated callers: no limit). */
  anonymous_subscription_timeout_ms: Schema.optionalWith(PositiveInt, { default: () => 600_000, exact: true })
}).annotations({ identifier: "RateLimits" })
export type RateLimits = typeof RateLimits.Type

export const defaultRateLimits: RateLimits = Schema.decodeSync(RateLimits)({})

/**
 * SSH over alknet (ALPN `alknet/ssh`): served when the config has an `ssh` object (`{}` serves it with the defaults).
 * - `listen`: also serve SSH on plain TCP at this `host:port`, for stock OpenSSH clients (default: QUIC only).
 * - `host_key_path`: the vault path of the Ed25519 host key (default `m/74'/0'/1'/0'`).
 * - `commands`: the only commands `ssh:exec` may run, verbatim (default: any).
 * - `forward`: `host:port` destinations `ssh:forward` may reach with `ssh -L` (default: none).
 * - `max_sessions_per_identity`: SSH connections one identity may have open at once (default 16).
 * - `idle_timeout_ms`: close an SSH connection after this long without traffic (default 0: never).
 * - `auth_timeout_ms`: reset a stream whose client has not authenticated within this long (default 10000).
 */
export const SshConfig = Schema.Struct({
  listen: Schema.optionalWith(ListenAddress, { exact: true }),
  host_key_path: Schema.optionalWith(HdPath.Path, { default: () => HdPath.sshHost, exact: true }),
  commands: Schema.optionalWith(Schema.Array(Schema.NonEmptyString), { exact: true }),
  forward: Schema.optionalWith(
    Schema.Array(Schema.String.pipe(Schema.pattern(/^(?:\[[0-9A-Fa-f:.]+\]|[^:[\]\s]+):\d{1,5}$/, {
      message: () => "expected host:port, e.g. 127.0.0.1:5432"
    }))),
    { default: () => [], exact: true }
  ),
  max_sessions_per_identity: Schema.optionalWith(Schema.Int.pipe(Schema.greaterThanOrEqualTo(1)), {
    default: () => 16,
    exact: true
  }),
  idle_timeout_ms: Schema.optionalWith(Schema.NonNegativeInt, { default: () => 0, exact: true }),
  auth_timeout_ms: Schema.optionalWith(Schema.Int.pipe(Schema.greaterThanOrEqualTo(1)), {
    default: () => 10_000,
    exact: true
  })
}).annotations({ identifier: "SshConfig" })
export type SshConfig = typeof SshConfig.Type

/** `postgres://USER@HOST:PORT/DATABASE` (or `postgresql://`), without a password. */
export const PostgresUrl = Schema.String.pipe(
  Schema.filter((text) => {
    let url: URL
    try {
      url = new URL(text)
    } catch {
      return "expected postgres://USER@HOST:PORT/DATABASE"
    }
    if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") return "expected postgres://USER@HOST:PORT/DATABASE"
    if (url.password !== "") {
      return "the URL holds a password: keep it out of the config (set PGPASSWORD, or name an environment variable " +
        "in password_env)"
    }
    return true
  }),
  Schema.annotations({ identifier: "PostgresUrl" })
)

/**
 * Where peers, API keys and credentials are stored.
 * - `sqlite` (default): `data_dir/alknet.db`, one machine.
 * - `postgres`: a PostgreSQL database shared by several nodes; a change made through any of them is applied by all
 *   (LISTEN/NOTIFY). The password comes from the environment: the variable named by `password_env`, else what
 *   PostgreSQL clients read anyway (`PGPASSWORD`, `~/.pgpass`).
 */
export const StoreConfig = Schema.Union(
  Schema.Struct({ type: Schema.Literal("sqlite") }),
  Schema.Struct({
    type: Schema.Literal("postgres"),
    url: PostgresUrl,
    password_env: Schema.optionalWith(Schema.NonEmptyString, { exact: true })
  })
).annotations({ identifier: "StoreConfig" })
export type StoreConfig = typeof StoreConfig.Type

/** The Prometheus endpoint's access: `token` (an authenticated caller) or `public` (anyone). */
export const MetricsConfig = Schema.Struct({
  auth: Schema.optionalWith(Schema.Literal("token", "public"), { default: () => "token" as const, exact: true })
})
export type MetricsConfig = typeof MetricsConfig.Type

/** Log lines for people (`pretty`) or for machines (`json`: one object per line). */
export const LogFormat = Schema.Literal("pretty", "json")
export type LogFormat = typeof LogFormat.Type

/**
 * Export of traces, metrics and logs over OTLP/HTTP (`observability/Telemetry.ts`); absent, the standard
 * `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_SERVICE_NAME` variables decide, and with neither nothing is exported.
 */
export const TelemetryConfig = Schema.Struct({
  /** The collector's base URL (`/v1/traces`, `/v1/metrics`, `/v1/logs` are appended). */
  otlp_endpoint: Schema.optionalWith(
    Schema.String.pipe(Schema.pattern(/^https?:\/\/[^\s]+$/, { message: () => "expected an http:// or https:// URL" })),
    { exact: true }
  ),
  /** `service.name` of the exported resource (default `alknet`). */
  service_name: Schema.optionalWith(Schema.NonEmptyString, { exact: true }),
  /** How often buffered spans, metrics and logs are sent (default 5000). */
  export_interval_ms: Schema.optionalWith(PositiveInt, { exact: true })
}).annotations({ identifier: "TelemetryConfig" })
export type TelemetryConfig = typeof TelemetryConfig.Type

export const StaticConfig = Schema.Struct({
  listen: Schema.optionalWith(ListenAddress, { default: () => ({ host: "127.0.0.1", port: 4433 }), exact: true }),
  tls: Schema.optionalWith(TlsIdentity, { default: () => ({ type: "raw_key" as const }), exact: true }),
  drain_timeout_ms: Schema.optionalWith(Schema.NonNegativeInt, { default: () => 2000, exact: true }),
  /** Where the node keeps its files (e.g. the SQLite database). Relative paths resolve against the config file. */
  data_dir: Schema.optionalWith(Schema.NonEmptyString, { default: () => "data", exact: true }),
  /** Serve `services/list-peers` (each peer's operations) to callers. */
  list_peers: Schema.optionalWith(Schema.Boolean, { default: () => false, exact: true }),
  /** Serve SSH (`alknet/ssh`) on the QUIC endpoint; absent: not served. */
  ssh: Schema.optionalWith(SshConfig, { exact: true }),
  /** Where peers, API keys and credentials are kept (default: SQLite in `data_dir`). */
  store: Schema.optionalWith(StoreConfig, { default: () => ({ type: "sqlite" as const }), exact: true }),
  /** Who may read `GET /metrics` on the HTTP gateway: `token` (an authenticated caller; the default) or `public`. */
  metrics: Schema.optionalWith(MetricsConfig, { default: () => ({ auth: "token" as const }), exact: true }),
  /** How `alknet node` logs to stderr: `pretty` (readable lines; the default) or `json` (one object per line). */
  log_format: Schema.optionalWith(LogFormat, { default: () => "pretty" as const, exact: true }),
  /** Serve the HTTP gateway on a listener of its own at `host:port` (absent: no such listener). */
  http_listen: Schema.optionalWith(ListenAddress, { exact: true }),
  /** Serve `http_listen` as `https://` with the node's TLS identity (default); false: plain `http://`. */
  http_tls: Schema.optionalWith(Schema.Boolean, { default: () => true, exact: true }),
  /** OTLP export of traces, metrics and logs; absent: the OTEL_* environment variables, else off. */
  telemetry: Schema.optionalWith(TelemetryConfig, { exact: true })
}).annotations({ identifier: "StaticConfig" })
export type StaticConfig = typeof StaticConfig.Type

/** `quic://HOST:PORT`, `ws://HOST:PORT` or `wss://HOST:PORT`. */
export const PeerAddress = Schema.String.pipe(
  Schema.pattern(/^(?:quic|wss?):\/\/(?:\[[0-9A-Fa-f:.]+\]|[^:/[\]\s]+):\d{1,5}\/?$/, {
    message: () => "expected quic://HOST:PORT, ws://HOST:PORT or wss://HOST:PORT"
  }),
  Schema.annotations({ identifier: "PeerAddress" })
)

/**
 * A peer this node connects to (SPEC §9): it keeps a reconnecting link to `address`, imports the peer's operations,
 * and serves its own back over the same connection.
 *
 * - `peer_id`: the peer's id in this node's graph (pinned names are `PEER_ID/ns/op`); default its `fingerprint`.
 * - `fingerprint`: the key the peer must present; required for a raw-key peer (an alknet node's own key).
 * - `token_credential`: a credential-store provider whose decrypted value is sent as the bearer token.
 * - Import rule: `namespace_prefix` (import `prefix/ns/op`), `operation_filter` (names or `ns/*` patterns to import;
 *   default all), `export_as`: `internal` (default, reachable by this node's handlers only) or `external` (callers
 *   of this node reach them too, subject to this node's access checks).
 */
export const OutboundPeer = Schema.Struct({
  peer_id: Schema.optionalWith(PeerId, { exact: true }),
  address: PeerAddress,
  fingerprint: Schema.optionalWith(Fingerprint, { exact: true }),
  token_credential: Schema.optionalWith(Schema.NonEmptyString, { exact: true }),
  namespace_prefix: Schema.optionalWith(Schema.String.pipe(Schema.pattern(/^[^/\s]+$/)), { exact: true }),
  operation_filter: Schema.optionalWith(Schema.Array(Schema.NonEmptyString), { exact: true }),
  export_as: Schema.optionalWith(Schema.Literal("internal", "external"), { default: () => "internal" as const, exact: true })
}).annotations({ identifier: "OutboundPeer" })
export type OutboundPeer = typeof OutboundPeer.Type

/** The id an outbound peer has in the graph: its `peer_id`, else its fingerprint, else its address. */
export const outboundId = (peer: OutboundPeer): string => peer.peer_id ?? peer.fingerprint ?? peer.address

/** How an OpenAPI import presents its credential: `Authorization: Bearer` (default), HTTP Basic, or a named header. */
export const ImportAuth = Schema.Union(
  Schema.Struct({ type: Schema.Literal("bearer") }),
  Schema.Struct({ type: Schema.Literal("basic") }),
  Schema.Struct({
    type: Schema.Literal("header"),
    header: Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$/, { message: () => "expected an HTTP header name" }))
  })
).annotations({ identifier: "ImportAuth" })
export type ImportAuth = typeof ImportAuth.Type

/** Who may call re-exported imports (snake_case, like `services/schema`'s `access_control`); `{}` is open. */
export const ImportAccess = Schema.Struct({
  required_scopes: Schema.optionalWith(Schema.Array(Schema.NonEmptyString), { exact: true }),
  required_scopes_any: Schema.optionalWith(Schema.Array(Schema.NonEmptyString), { exact: true }),
  resource_type: Schema.optionalWith(Schema.NonEmptyString, { exact: true }),
  resource_action: Schema.optionalWith(Schema.NonEmptyString, { exact: true })
}).annotations({ identifier: "ImportAccess" })
export type ImportAccess = typeof ImportAccess.Type

const HttpUrl = Schema.String.pipe(
  Schema.filter((text) => {
    try {
      const url = new URL(text)
      if (url.protocol !== "http:" && url.protocol !== "https:") return "expected an http:// or https:// URL"
      return url.username === "" && url.password === "" ||
        "the URL holds credentials: keep the secret in the node's credential store and name it in credential"
    } catch {
      return "expected an http:// or https:// URL"
    }
  }),
  Schema.annotations({ identifier: "HttpUrl" })
)

/**
 * An API imported as operations this node's handlers can compose (SPEC §14), reloaded live: its operations are
 * registered as `NAMESPACE/OP` in the node's peer graph under the peer id `namespace`.
 *
 * - `type`: `openapi` (a REST API's OpenAPI 3.x document, JSON or YAML, at `url` or in `file`) or `mcp` (the tools of
 *   an MCP server speaking Streamable HTTP at `url`).
 * - `base_url` (openapi): where the API is, when the document's `servers` do not say.
 * - `credential`: the name of a credential in the node's store (`alknet credential put NAME`): its decrypted value is
 *   the secret the API is called with — never a secret in the config. Presented as `auth` says (openapi; default
 *   `{"type": "bearer"}`); an MCP server gets it as a bearer token.
 * - `export_as`: `internal` (default: for this node's handlers only) or `external` (callers of this node reach them
 *   too): then `access` is required — the API is called with the node's credential, which an open export would lend
 *   to anyone.
 */
export const Import = Schema.Struct({
  type: Schema.Literal("openapi", "mcp"),
  namespace: PeerId,
  url: Schema.optionalWith(HttpUrl, { exact: true }),
  file: Schema.optionalWith(Schema.NonEmptyString, { exact: true }),
  base_url: Schema.optionalWith(HttpUrl, { exact: true }),
  credential: Schema.optionalWith(Schema.NonEmptyString, { exact: true }),
  auth: Schema.optionalWith(ImportAuth, { exact: true }),
  export_as: Schema.optionalWith(Schema.Literal("internal", "external"), { default: () => "internal" as const, exact: true }),
  access: Schema.optionalWith(ImportAccess, { exact: true })
}).pipe(
  Schema.filter((entry) => {
    const problem = (key: string, message: string) => ({ path: [key], message })
    if (entry.type === "openapi" && (entry.url === undefined) === (entry.file === undefined)) {
      return problem("url", "an openapi import needs exactly one of url and file")
    }
    if (entry.type === "mcp") {
      if (entry.url === undefined) return problem("url", "an mcp import needs the server's url")
      if (entry.file !== undefined) return problem("file", "an mcp import is served at a url, not read from a file")
      if (entry.base_url !== undefined) return problem("base_url", "base_url is for openapi imports")
      if (entry.auth !== undefined && entry.auth.type !== "bearer") {
        return problem("auth", "an mcp server gets its credential as a bearer token")
      }
    }
    if (entry.auth !== undefined && entry.credential === undefined) return problem("auth", "auth needs a credential")
    if (entry.export_as === "external" && entry.access === undefined) {
      return problem("access", "export_as external needs access (who may call the API with this node's credential)")
    }
    return true
  }),
  Schema.annotations({ identifier: "Import" })
)
export type Import = typeof Import.Type

/** Peers and API keys must be unique by `peer_id` / `prefix`; the issue points at the second occurrence. */
const uniqueBy = <A>(list: ReadonlyArray<A>, key: (a: A) => string, field: string, name: string) => {
  const seen = new Set<string>()
  for (const [index, item] of list.entries()) {
    const k = key(item)
    if (seen.has(k)) return { path: [field, index, name], message: `duplicate ${name} ${JSON.stringify(k)}` }
    seen.add(k)
  }
  return undefined
}

/** An import is a peer of the graph named by its namespace: it may not take an outbound peer's id. */
const importClash = (outbound: ReadonlyArray<OutboundPeer>, imports: ReadonlyArray<Import>) => {
  const ids = new Set(outbound.map(outboundId))
  const at = imports.findIndex((i) => ids.has(i.namespace))
  return at < 0
    ? undefined
    : { path: ["imports", at, "namespace"], message: `namespace ${JSON.stringify(imports[at]!.namespace)} is an outbound peer's id` }
}

export const DynamicConfig = Schema.Struct({
  peers: Schema.optionalWith(Schema.Array(PeerEntry), { default: () => [], exact: true }),
  api_keys: Schema.optionalWith(Schema.Array(ApiKeyEntry), { default: () => [], exact: true }),
  rate_limits: Schema.optionalWith(RateLimits, { default: () => defaultRateLimits, exact: true }),
  outbound: Schema.optionalWith(Schema.Array(OutboundPeer), { default: () => [], exact: true }),
  imports: Schema.optionalWith(Schema.Array(Import), { default: () => [], exact: true })
}).pipe(
  Schema.filter((config) =>
    uniqueBy(config.peers, (p) => p.peer_id, "peers", "peer_id") ??
      uniqueBy(config.api_keys, (k) => k.prefix, "api_keys", "prefix") ??
      uniqueBy(config.outbound, outboundId, "outbound", "peer_id") ??
      uniqueBy(config.imports, (i) => i.namespace, "imports", "namespace") ??
      importClash(config.outbound, config.imports) ?? true
  ),
  Schema.annotations({ identifier: "DynamicConfig" })
)
export type DynamicConfig = typeof DynamicConfig.Type

export const emptyDynamic: DynamicConfig = {
  peers: [],
  api_keys: [],
  rate_limits: defaultRateLimits,
  outbound: [],
  imports: []
}

/** The whole file: static and dynamic fields side by side at the top level. */
export const Config = Schema.extend(StaticConfig, DynamicConfig).annotations({ identifier: "Config" })
export type Config = typeof Config.Type

/** Render a path like `peers[1].fingerprints[0]`. */
const renderPath = (path: ReadonlyArray<PropertyKey>): string =>
  path.reduce<string>(
    (out, key) => typeof key === "number" ? `${out}[${key}]` : out === "" ? String(key) : `${out}.${String(key)}`,
    ""
  )

/**
 * One line per problem, each naming its field: `api_keys[0].expires_at: Expected DateTimeUtc, actual "soon"`. What a
 * problem repeats of the file (a path, a value) is bounded (`CallError.echo`).
 */
export const formatError = (error: ParseResult.ParseError): string =>
  ParseResult.ArrayFormatter.formatErrorSync(error)
    .map((issue) => `${issue.path.length === 0 ? "config" : echo(renderPath(issue.path))}: ${echo(issue.message)}`)
    .join("; ")

const decodeConfig = Schema.decodeUnknownEither(Config, { errors: "all", onExcessProperty: "error" })

/**
 * Decode a config file's text. The error is a single readable line naming every offending field. A document nested
 * deeper than `maxDepth` (default 64 levels) is rejected before it is decoded: `config is nested deeper than 64 levels`.
 */
export const decode = (text: string, maxDepth: number = Json.DEFAULT_MAX_DEPTH): Either.Either<Config, string> => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (e) {
    return Either.left(`config: not valid JSON: ${echo(e instanceof Error ? e.message : String(e))}`)
  }
  if (Json.exceedsDepth(json, maxDepth)) return Either.left(Json.tooDeep("config", maxDepth))
  return Either.mapLeft(decodeConfig(json), formatError)
}

/** A decoded config's static part (read once) and dynamic part (reloaded). */
export const split = (config: Config): { readonly static: StaticConfig; readonly dynamic: DynamicConfig } => {
  const { api_keys, imports, outbound, peers, rate_limits, ...staticConfig } = config
  return { static: staticConfig, dynamic: { peers, api_keys, rate_limits, outbound, imports } }
}

/** The dynamic part of a decoded config. */
export const dynamicOf = (config: Config): DynamicConfig => split(config).dynamic
