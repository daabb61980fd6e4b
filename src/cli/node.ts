/**
 * `alknet node`: run a node from its home until SIGINT / SIGTERM, then drain.
 *
 * The first stdout line is stable for scripts: `alknet node <fingerprint> listening quic://HOST:PORT`, then one
 * such line per other transport (`wss://…`, or `ws://…` with `--ws-plain`; `https://…`, or `http://…` with
 * `--http-plain`, for the gateway's own listener). Everything else goes to stderr.
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Config, Effect, identity, Option, Schedule } from "effect"
import * as dgram from "node:dgram"
import * as fs from "node:fs/promises"
import * as net from "node:net"
import * as path from "node:path"
import * as ConfigFile from "../layers/ConfigFile.js"
import type { NodeInfo } from "../layers/Node.js"
import * as NodeHome from "../layers/NodeHome.js"
import * as Logs from "../observability/Logs.js"
import * as Shutdown from "./shutdown.js"
import type { ListenAddress, TelemetryConfig } from "../schema/Config.js"
import * as Demo from "./demo.js"
import { CliError, signalEndsNormally, usage } from "./errors.js"
import * as Home from "./home.js"
import { initHome } from "./init.js"
import * as Io from "./io.js"
import * as Lock from "./lock.js"
import * as Outbound from "./outbound.js"
import * as Shared from "./options.js"
import { cliTerms, writeRunFile } from "./status.js"

const listen = Options.text("listen").pipe(
  Options.withPseudoName("HOST:PORT"),
  Options.withDescription("listen for QUIC on HOST:PORT instead of the config's listen (port 0: any free port)"),
  Options.optional
)
const wsListen = Options.text("ws-listen").pipe(
  Options.withPseudoName("HOST:PORT"),
  Options.withDescription("also serve the call protocol over WebSocket on HOST:PORT (wss:// with the node's key)"),
  Options.optional
)
const wsPlain = Options.boolean("ws-plain").pipe(
  Options.withDescription("serve plain ws:// instead of wss:// (behind a TLS-terminating proxy)")
)
const http = Options.boolean("http").pipe(
  Options.withDescription(
    "also serve the HTTP gateway on the --ws-listen port: POST /call, /batch, /subscribe (SSE), GET /search, /schema, " +
      "/openapi.json, /healthz, and MCP at /mcp"
  )
)
const httpListen = Options.text("http-listen").pipe(
  Options.withPseudoName("HOST:PORT"),
  Options.withDescription(
    "serve the HTTP gateway on a port of its own at HOST:PORT (https:// with the node's key; default: the config's " +
      "http_listen)"
  ),
  Options.optional
)
const httpPlain = Options.boolean("http-plain").pipe(
  Options.withDescription("serve the --http-listen port as plain http:// instead of https:// (loopback, or behind a proxy)")
)
const demo = Options.boolean("demo").pipe(
  Options.withDescription("also serve the demo operations (demo/echo, demo/secret, demo/slow, demo/ticks)")
)
const logFormat = Options.choice("log-format", ["pretty", "json"]).pipe(
  Options.withDescription(
    "how logs are written to stderr: pretty (readable lines, the default) or json (one object per line, with " +
      "trace_id / span_id inside a traced call); default: the config's log_format"
  ),
  Options.optional
)
const init = Options.boolean("init").pipe(
  Options.withDescription("create the home first if there is none (its report goes to stderr)")
)

/** Whether a port is taken: bind it ourselves for a moment (UDP for QUIC, TCP for WebSocket). */
const inUse = (kind: "udp" | "tcp", address: ListenAddress) =>
  Effect.async<boolean>((resume) => {
    const failed = (e: NodeJS.ErrnoException) => resume(Effect.succeed(e.code === "EADDRINUSE"))
    if (kind === "udp") {
      const socket = dgram.createSocket(address.host.includes(":") ? "udp6" : "udp4")
      socket.once("error", (e: NodeJS.ErrnoException) => {
        socket.close()
        failed(e)
      })
      socket.bind(address.port, address.host, () => socket.close(() => resume(Effect.succeed(false))))
    } else {
      const server = net.createServer()
      server.once("error", failed)
      server.listen(address.port, address.host, () => server.close(() => resume(Effect.succeed(false))))
    }
  })

/**
 * A listen failure said plainly when the cause is a port in use (the QUIC library only says "Could not bind").
 * `undefined` when that is not it.
 */
const explainListen = (
  home: string,
  listen: ListenAddress | undefined,
  ws: ListenAddress | undefined,
  httpAt: ListenAddress | undefined
) =>
  Effect.gen(function*() {
    const config = yield* Effect.option(Home.config(home))
    const quic = listen ?? config.pipe(Option.map((c) => c.listen), Option.getOrUndefined)
    const http = httpAt ?? config.pipe(Option.flatMap((c) => Option.fromNullable(c.http_listen)), Option.getOrUndefined)
    const taken = (kind: "quic" | "ws" | "http", a: ListenAddress) =>
      new CliError({
        code: "Listen",
        message: `cannot listen on ${kind}://${a.host.includes(":") ? `[${a.host}]` : a.host}:${a.port}: the ${
          kind === "quic" ? "UDP" : "TCP"
        } port is in use (another node or program has it); choose another with --${kind === "quic" ? "" : `${kind}-`}listen`
      })
    if (quic !== undefined && quic.port !== 0 && (yield* inUse("udp", quic))) return taken("quic", quic)
    if (ws !== undefined && ws.port !== 0 && (yield* inUse("tcp", ws))) return taken("ws", ws)
    if (http !== undefined && http.port !== 0 && (yield* inUse("tcp", http))) return taken("http", http)
    return undefined
  })

/**
 * Say on stderr when an outbound peer connects, is lost, or fails (the node's own view, `node/info`, once a second:
 * each change of state once, not each retry).
 */
const watchPeers = (info: Effect.Effect<NodeInfo>) =>
  Effect.gen(function*() {
    const seen = new Map<string, string>()
    const check = Effect.flatMap(info, (now) =>
      Effect.forEach(now.peers, (peer) => {
        const before = seen.get(peer.peer_id)
        seen.set(peer.peer_id, peer.state)
        if (before === peer.state) return Effect.void
        const why = peer.last_error === null ? "" : `: ${cliTerms(peer.last_error)}`
        switch (peer.state) {
          case "connected":
            return Io.err(`alknet node: peer ${peer.peer_id} connected (${peer.address}, ${Io.plural(peer.operations, "operation")})`)
          case "reconnecting":
            return Io.err(
              before === "connected"
                ? `alknet node: peer ${peer.peer_id} lost${why}; reconnecting`
                : `alknet node: peer ${peer.peer_id} not reachable at ${peer.address}${why}; retrying`
            )
          case "failed":
            return Io.err(`alknet node: peer ${peer.peer_id} failed${why}`)
          default:
            return Effect.void
        }
      }, { discard: true }))
    yield* check.pipe(Effect.repeat(Schedule.spaced("1 second")))
  })

/** Re-read the config file on SIGHUP, for as long as the scope lives. */
const reloadOnSighup = Effect.gen(function*() {
  const file = yield* ConfigFile.ConfigFile
  const hangup = Effect.async<void>((resume) => {
    const on = () => resume(Effect.void)
    process.once("SIGHUP", on)
    return Effect.sync(() => void process.removeListener("SIGHUP", on))
  })
  yield* hangup.pipe(
    Effect.zipRight(file.reload.pipe(
      Effect.zipRight(Io.err(`alknet node: ${file.path} reloaded`)),
      Effect.catchAll((e) => Io.err(`alknet node: reload refused, previous config kept: ${e.message}`))
    )),
    Effect.forever,
    Effect.forkScoped
  )
})

const otelVariables = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_HEADERS"] as const

/**
 * The OTLP exporters when the config's `telemetry` or the `OTEL_*` variables name a collector; else nothing (and
 * `@effect/opentelemetry` is never loaded).
 */
const telemetryLayer = (section: TelemetryConfig | undefined) =>
  Effect.gen(function*() {
    const env: Record<string, string | undefined> = {}
    for (const name of otelVariables) env[name] = Option.getOrUndefined(yield* Config.option(Config.string(name)))
    const Telemetry = yield* Effect.promise(() => import("../observability/Telemetry.js"))
    return Option.map(Telemetry.resolve(section, env), (options) => ({ options, layer: Telemetry.layer(options) }))
  }).pipe(Effect.orDie)

export const command = Command.make(
  "node",
  { home: Shared.home, listen, wsListen, wsPlain, http, httpListen, httpPlain, demo, init, logFormat, connect: Outbound.connectOption },
  (o) =>
    Effect.gen(function*() {
      const home = path.resolve(o.home)
      const listenAt = Option.isSome(o.listen) ? yield* Shared.parseListen("--listen", o.listen.value) : undefined
      const wsAt = Option.isSome(o.wsListen) ? yield* Shared.parseListen("--ws-listen", o.wsListen.value) : undefined
      if (o.http && wsAt === undefined) {
        return yield* usage("--http serves the gateway on the WebSocket port: it needs --ws-listen (or use --http-listen)")
      }
      const httpAt = Option.isSome(o.httpListen) ? yield* Shared.parseListen("--http-listen", o.httpListen.value) : undefined
      const connect = yield* Effect.forEach(o.connect, (target) => Outbound.parseTarget("--connect", target))
      if (o.init) {
        const found = yield* Effect.promise(() => fs.access(NodeHome.configPath(home)).then(() => true, () => false))
        if (!found) yield* initHome({ home, words: 24, mnemonicStdin: false, storeMnemonic: true }, Io.err)
      }
      yield* NodeHome.requireHome(home)
      // What the node needs before it starts: the log format (the flag wins), the drain timeout, telemetry. An invalid
      // config means defaults here; the node's start then fails with its own message.
      const config = Option.getOrUndefined(yield* Effect.option(Home.config(home)))
      const format = Option.getOrElse(o.logFormat, () => config?.log_format ?? "pretty")
      yield* Effect.locallyScoped(Logs.currentFormat, format)
      // One node per home: a second one would take over the run file and remove it when it stops.
      yield* Lock.acquire(home)
      const mnemonic = yield* Home.mnemonicFromStdin(home)
      // The node (QUIC and all) loads only for this command.
      const Node = yield* Effect.promise(() => import("../layers/Node.js"))
      const layer = Node.layerHome({
        home,
        ...(listenAt === undefined ? {} : { listen: listenAt }),
        ...(wsAt === undefined ? {} : { webSocket: { ...wsAt, tls: !o.wsPlain, gateway: o.http } }),
        http: { ...(httpAt === undefined ? {} : { listen: httpAt }), ...(o.httpPlain ? { tls: false } : {}) },
        ...(connect.length === 0 ? {} : { connect }),
        ...(o.demo ? { operations: Demo.operations((line) => Io.err(`demo: ${line}`)) } : {}),
        ...(Option.isSome(mnemonic) ? { mnemonic: mnemonic.value } : {})
      })
      const telemetry = yield* telemetryLayer(config?.telemetry)
      let started = false
      yield* Effect.gen(function*() {
        const node = yield* Node.Node
        started = true
        for (const transport of node.transports) {
          yield* Io.out(`alknet node ${node.fingerprint} listening ${transport.address}`)
        }
        yield* writeRunFile(home, { pid: process.pid, fingerprint: node.fingerprint, transports: node.transports })
        yield* Effect.sync(() => Shutdown.setDrainTimeout(config?.drain_timeout_ms ?? 2000))
        if (Option.isSome(telemetry)) {
          yield* Io.err(`alknet node: exporting traces, metrics and logs to ${telemetry.value.options.endpoint} (OTLP/HTTP)`)
        }
        yield* Effect.sync(signalEndsNormally)
        yield* reloadOnSighup
        yield* Effect.forkScoped(watchPeers(node.info))
        yield* Io.err(`alknet node: serving from ${home}; stop with Ctrl-C or SIGTERM (open calls are drained)`)
        yield* Effect.addFinalizer(() => Io.err("alknet node: stopping: no new connections, draining open calls"))
        return yield* Effect.never
      }).pipe(
        Effect.scoped,
        Effect.provide(layer),
        // Outside the node's layer: its spans, metrics and logs are exported until it has stopped.
        Option.isSome(telemetry) ? Effect.provide(telemetry.value.layer) : identity,
        Effect.catchIf(
          (e) => e._tag === "NodeError" && e.reason === "Listen",
          (e) => Effect.flatMap(explainListen(home, listenAt, wsAt, httpAt), (plain) => Effect.fail(plain ?? e))
        ),
        Effect.ensuring(Effect.suspend(() => (started ? Io.err("alknet node: stopped") : Effect.void)))
      )
    }).pipe(Effect.scoped)
).pipe(Command.withDescription("Run the node of a home until SIGINT / SIGTERM (graceful drain)."))
