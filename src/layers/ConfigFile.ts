/**
 * The node's JSON config file (SPEC §11), reloaded while the node runs.
 *
 * - At start the file must exist and be valid, or the layer fails with a `ConfigError` naming the fields.
 * - Afterwards its directory is watched. A change (including an editor's write-to-temp-then-rename) is debounced,
 *   then the file is read and decoded. Valid → the dynamic part (peers, API keys, rate limits) is swapped in whole;
 *   a changed static field is ignored with a warning (it needs a restart). Invalid (bad JSON, duplicate `peer_id`,
 *   a bad field) or unreadable → one log line naming the problem, and the previous config stays in force.
 * - Reload is local only: a file change, or {@link ConfigFile.reload} called by the node's own program (e.g. on
 *   SIGHUP). No operation on the wire can reach it.
 *
 * Relative paths in the file (`data_dir`, `tls.key_file`, `tls.cert_file`, `imports[].file`) resolve against the file's
 * directory.
 */
import { Context, Data, Duration, Effect, Layer, PubSub, Queue, SubscriptionRef } from "effect"
import type { Scope } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { ConfigError } from "../errors/ConfigError.js"
import * as NodeMetrics from "../observability/NodeMetrics.js"
import * as Config from "../schema/Config.js"
import * as IdentityProvider from "../services/IdentityProvider.js"
import * as NodeConfig from "../services/NodeConfig.js"
import { signalWithin, watchFiles, withWallClock } from "./FileWatch.js"

/** What a reload attempt did. */
export type ReloadEvent = Data.TaggedEnum<{
  /** The new dynamic config is in force. */
  Reloaded: { readonly peers: number; readonly apiKeys: number }
  /** The file was unreadable or invalid; the previous config stays in force. */
  Rejected: { readonly error: ConfigError }
}>
export const ReloadEvent = Data.taggedEnum<ReloadEvent>()

export interface Service {
  /** Absolute path of the file. */
  readonly path: string
  /** Re-read the file now (local only — e.g. wire it to SIGHUP). Fails, changing nothing, if it is invalid. */
  readonly reload: Effect.Effect<void, ConfigError>
  /** Subscribe (now) to reload outcomes, for as long as the scope lives. */
  readonly events: Effect.Effect<Queue.Dequeue<ReloadEvent>, never, Scope.Scope>
}

export class ConfigFile extends Context.Tag("alknet/ConfigFile")<ConfigFile, Service>() {}

export interface Options {
  /** Quiet time after the last change before reading the file (default 50 ms). */
  readonly debounce?: Duration.DurationInput
}

const resolvePaths = (file: string, config: Config.Config): Config.Config => {
  const at = (p: string) => path.resolve(path.dirname(file), p)
  const tls = config.tls
  return {
    ...config,
    data_dir: at(config.data_dir),
    tls: tls.type === "x509"
      ? { ...tls, cert_file: at(tls.cert_file), key_file: at(tls.key_file) }
      : tls.type === "raw_key" && tls.key_file !== undefined
      ? { ...tls, key_file: at(tls.key_file) }
      : tls,
    imports: config.imports.map((entry) => (entry.file === undefined ? entry : { ...entry, file: at(entry.file) }))
  }
}

const read = (file: string) =>
  Effect.tryPromise({
    try: () => fs.readFile(file, "utf8"),
    catch: (cause) =>
      new ConfigError({
        reason: "Read",
        path: file,
        message: `cannot read ${file}: ${(cause as NodeJS.ErrnoException).code ?? "unknown error"}`
      })
  })

const parse = (file: string, text: string): Effect.Effect<Config.Config, ConfigError> =>
  Effect.mapBoth(Config.decode(text), {
    onFailure: (problems) =>
      new ConfigError({ reason: "Invalid", path: file, message: `invalid ${file}: ${problems}` }),
    onSuccess: (config) => resolvePaths(file, config)
  })

/** Read and decode a config file once (relative paths resolved). */
export const load = (file: string): Effect.Effect<Config.Config, ConfigError> =>
  Effect.flatMap(read(path.resolve(file)), (text) => parse(path.resolve(file), text))

/** The fields read once at start: a change is reported, not applied. */
const staticFields = Object.keys(Config.StaticConfig.fields) as ReadonlyArray<keyof Config.StaticConfig>

/** Provide `NodeConfig` and `ConfigFile` from the file at `file`, reloading it on change. */
export const layerConfig = (
  file: string,
  options: Options = {}
): Layer.Layer<NodeConfig.NodeConfig | ConfigFile, ConfigError> =>
  Layer.scopedContext(
    Effect.gen(function*() {
      const absolute = path.resolve(file)
      let lastText = yield* read(absolute)
      const initial = yield* parse(absolute, lastText)
      const { dynamic: initialDynamic, static: staticConfig } = Config.split(initial)
      const dynamic = yield* SubscriptionRef.make<Config.DynamicConfig>(initialDynamic)
      const events = yield* Effect.acquireRelease(PubSub.unbounded<ReloadEvent>(), PubSub.shutdown)
      const lock = yield* Effect.makeSemaphore(1)

      const apply = (text: string) =>
        Effect.gen(function*() {
          const next = yield* parse(absolute, text)
          const changed = staticFields.filter((k) => JSON.stringify(next[k]) !== JSON.stringify(staticConfig[k]))
          if (changed.length > 0) {
            yield* Effect.logWarning(
              `config ${absolute}: ${changed.join(", ")} changed; static fields take effect after a restart`
            )
          }
          yield* SubscriptionRef.set(dynamic, Config.dynamicOf(next))
          lastText = text
          NodeMetrics.countReload("config", true)
          yield* Effect.logInfo(
            `config ${absolute} reloaded: ${next.peers.length} peers, ${next.api_keys.length} api keys`
          )
          yield* PubSub.publish(
            events,
            ReloadEvent.Reloaded({ peers: next.peers.length, apiKeys: next.api_keys.length })
          )
        })

      const rejected = (error: ConfigError) =>
        Effect.gen(function*() {
          NodeMetrics.countReload("config", false)
          yield* Effect.logError(`config reload rejected, previous config stays in force: ${error.message}`)
          yield* PubSub.publish(events, ReloadEvent.Rejected({ error }))
        })

      /** Re-read; the same text as last time is not a change (editors touch files). */
      const reloadIfChanged = (force: boolean) =>
        lock.withPermits(1)(
          Effect.flatMap(read(absolute), (text) => !force && text === lastText ? Effect.void : apply(text)).pipe(
            Effect.tapError(rejected)
          )
        )

      const signal = yield* watchFiles(path.dirname(absolute), [path.basename(absolute)]).pipe(
        Effect.mapError((error) => new ConfigError({ reason: "Read", path: absolute, message: error.message }))
      )
      const debounce = Duration.decode(options.debounce ?? Duration.millis(50))
      yield* Effect.forkScoped(withWallClock(Effect.forever(
        Effect.gen(function*() {
          yield* Queue.take(signal)
          // Wait for a quiet period: every further event restarts it.
          while (yield* signalWithin(signal, debounce)) continue
          yield* Effect.ignore(reloadIfChanged(false))
        })
      )))

      return Context.make(NodeConfig.NodeConfig, NodeConfig.fromRef(staticConfig, dynamic)).pipe(
        Context.add(ConfigFile, {
          path: absolute,
          reload: reloadIfChanged(true),
          events: PubSub.subscribe(events)
        })
      )
    })
  )

/**
 * An `IdentityProvider` over the config's current peers and API keys. The index is rebuilt lazily, once per
 * accepted reload, by the first lookup that sees the new config.
 */
export const layerIdentity: Layer.Layer<IdentityProvider.IdentityProvider, never, NodeConfig.NodeConfig> = Layer
  .effect(
    IdentityProvider.IdentityProvider,
    Effect.gen(function*() {
      const config = yield* NodeConfig.NodeConfig
      let source = yield* config.dynamic
      let index = IdentityProvider.makeIndex(source.peers, source.api_keys)
      const provider = IdentityProvider.fromIndex(() => index, yield* Effect.clock)
      const refresh = Effect.map(config.dynamic, (dynamic) => {
        if (dynamic === source) return
        index = IdentityProvider.makeIndex(dynamic.peers, dynamic.api_keys)
        source = dynamic
      })
      return IdentityProvider.IdentityProvider.of({
        resolveFingerprint: (fingerprint) => Effect.zipRight(refresh, provider.resolveFingerprint(fingerprint)),
        resolveToken: (token) => Effect.zipRight(refresh, provider.resolveToken(token))
      })
    })
  )

/** `NodeConfig`, `ConfigFile` and an `IdentityProvider` over the file's peers and API keys. */
export const layer = (
  file: string,
  options: Options = {}
): Layer.Layer<NodeConfig.NodeConfig | ConfigFile | IdentityProvider.IdentityProvider, ConfigError> =>
  Layer.provideMerge(layerIdentity, layerConfig(file, options))
