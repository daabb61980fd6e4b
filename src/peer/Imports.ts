/**
 * A node's imports (SPEC §14, the config's `imports`): REST APIs (`from_openapi`) and MCP servers' tools (`from_mcp`)
 * as operations the node's handlers compose, kept in step with the live config.
 *
 * Each import is a peer of the node's graph named by its `namespace`: its operations (`NAMESPACE/OP`, leaves,
 * Internal unless `export_as: "external"` with an `access` control) are added to the graph for as long as the import
 * is configured, so `ctx.env.invoke("pets/getPet", …)` reaches them, and `services/list-peers` shows them to an admin.
 *
 * - At start and after each change of `imports`: a new entry is loaded (its document fetched or read, or its MCP
 *   session opened and its tools listed) and attached; a removed one is detached (its operations are then
 *   NOT_FOUND; an MCP session is closed); a changed one is loaded anew and swapped in whole.
 * - The secret comes from the node's credential store, decrypted by the vault (`credential` names it): it is a
 *   `Redacted` capability of each imported operation (OpenAPI) or the MCP session's bearer token, never in the config.
 * - A bad import — an unreachable URL, a document that is not OpenAPI, an unknown credential, a server that refuses
 *   us — is one log line naming the import and its `AdapterError`; the import's previous version (if any) stays
 *   attached, the other imports are unaffected, and the node keeps serving. It is tried again at the next reload of the
 *   config (an edit of the file, or SIGHUP: `changes` emits the entries again); an attached, unchanged import is left
 *   alone.
 */
import { Cause, Duration, Effect, ExecutionStrategy, Exit, Option, Redacted, Schema, Scope, Stream, SubscriptionRef } from "effect"
import * as fs from "node:fs/promises"
import * as AdapterError from "../errors/AdapterError.js"
import type { OperationSource } from "../call/Dispatcher.js"
import type { Import, ImportAccess, ImportAuth } from "../schema/Config.js"
import * as CredentialStore from "../services/CredentialStore.js"
import type * as Operation from "../services/Operation.js"
import type { Service as Graph } from "../services/PeerCompositeEnv.js"
import * as Vault from "../services/Vault.js"
import * as FromMcp from "./FromMcp.js"
import * as FromOpenApi from "./FromOpenApi.js"

/** The overlay slot imports take in their peer's state of the graph. */
export const SLOT = "import"

/** Default: how long loading one import may take. */
export const DEFAULT_TIMEOUT = Duration.seconds(10)
/** Default largest OpenAPI document: 16 MiB. */
export const DEFAULT_MAX_DOCUMENT_BYTES = 16 * 1024 * 1024

/** An import and how it is doing, as `node/info` reports it to an admin. */
export const ImportInfo = Schema.Struct({
  namespace: Schema.String,
  type: Schema.Literal("openapi", "mcp"),
  /** The document's or server's URL, or the document's file. */
  source: Schema.String,
  /** `importing` (not attached yet), `imported` (its operations are served), `failed` (not attached: `last_error`). */
  state: Schema.Literal("importing", "imported", "failed"),
  operations: Schema.Number,
  /** Why the last attempt failed (an `imported` one keeps its previous version attached). */
  last_error: Schema.NullOr(Schema.String)
})
export type ImportInfo = typeof ImportInfo.Type

export interface Options {
  /** The config's entries now, then at each reload (the same entries again retry the failed ones). */
  readonly changes: Stream.Stream<ReadonlyArray<Import>>
  /** How long loading one import may take (default 10 s). */
  readonly timeout?: Duration.DurationInput
  /** Largest OpenAPI document (default 16 MiB). */
  readonly maxDocumentBytes?: number
  /**
   * The node's own operations: an import may not take one of their names (its handlers' `ctx.env` routes to peers
   * first, so it would stand in for the node's own operation there).
   */
  readonly local?: OperationSource
}

export interface Service {
  /** Each configured import, in config order. */
  readonly status: Effect.Effect<ReadonlyArray<ImportInfo>>
  /** The status now, then after each change it went through (attached, failed, detached). */
  readonly changes: Stream.Stream<ReadonlyArray<ImportInfo>>
}

const sourceOf = (entry: Import): string => entry.url ?? entry.file ?? ""

const describe = (error: unknown) => (error instanceof Error ? error.message : String(error))

const accessOf = (access: ImportAccess): Operation.AccessControlInput => ({
  requiredScopes: access.required_scopes,
  requiredScopesAny: access.required_scopes_any,
  resourceType: access.resource_type,
  resourceAction: access.resource_action
})

const credentialOf = (auth: ImportAuth | undefined, secret: Redacted.Redacted<string>): FromOpenApi.Credential =>
  auth?.type === "header" ? { type: "header", header: auth.header, secret } : { type: auth?.type ?? "bearer", secret }

class Refused extends Error {}

/** Fetch a document: at most `max` bytes; 401/403 is Unauthorized, another error status DiscoveryFailed. */
const download = (url: string, max: number): Effect.Effect<string, AdapterError.AdapterError> =>
  Effect.tryPromise({
    try: async (signal) => {
      const response = await fetch(url, { signal, headers: { accept: "application/json, application/yaml, text/yaml, */*" } })
      if (response.status === 401 || response.status === 403) throw new Refused(`HTTP ${response.status}`)
      if (!response.ok || response.body === null) throw new Error(`HTTP ${response.status}`)
      const chunks: Array<Uint8Array> = []
      let size = 0
      const reader = response.body.getReader()
      while (true) {
        const { done, value } = await reader.read()
        if (done) break
        size += value.length
        if (size > max) {
          await reader.cancel()
          throw new RangeError(`the document is larger than ${max} bytes`)
        }
        chunks.push(value)
      }
      return Buffer.concat(chunks).toString("utf8")
    },
    catch: (error) =>
      error instanceof Refused
        ? AdapterError.make("Unauthorized", `${url} refused us (${error.message})`)
        : error instanceof RangeError
        ? AdapterError.make("SchemaParse", `${url}: ${error.message}`)
        : /^HTTP \d+$/.test(describe(error))
        ? AdapterError.make("DiscoveryFailed", `${url} answered ${describe(error)}`)
        : AdapterError.make("Transport", `cannot fetch ${url}: ${describe((error as { cause?: unknown }).cause ?? error)}`)
  })

const readFile = (file: string, max: number): Effect.Effect<string, AdapterError.AdapterError> =>
  Effect.tryPromise({
    try: async () => {
      if ((await fs.stat(file)).size > max) throw new RangeError(`the document is larger than ${max} bytes`)
      return await fs.readFile(file, "utf8")
    },
    catch: (error) =>
      error instanceof RangeError
        ? AdapterError.make("SchemaParse", `${file}: ${error.message}`)
        : AdapterError.make("DiscoveryFailed", `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? describe(error)}`)
  })

interface Attached {
  readonly key: string
  readonly scope: Scope.CloseableScope
  readonly operations: number
}

/** Keep the graph's imports in step with the config for the life of the scope. */
export const make = (
  graph: Graph,
  options: Options
): Effect.Effect<Service, never, Scope.Scope | CredentialStore.CredentialStore | Vault.Vault> =>
  Effect.gen(function*() {
    const store = yield* CredentialStore.CredentialStore
    const vault = yield* Vault.Vault
    const timeout = options.timeout ?? DEFAULT_TIMEOUT
    const maxBytes = options.maxDocumentBytes ?? DEFAULT_MAX_DOCUMENT_BYTES
    const attached = new Map<string, Attached>()
    const errors = new Map<string, string>()
    let entries: ReadonlyArray<Import> = []
    const lock = yield* Effect.makeSemaphore(1)
    // Each import's scope is a child of this one: whatever happens to an attempt (even an interruption mid-load), what
    // it opened is closed with the node at the latest.
    const root = yield* Effect.scope

    const statusNow = (): ReadonlyArray<ImportInfo> =>
      entries.map((entry): ImportInfo => {
        const current = attached.get(entry.namespace)
        const error = errors.get(entry.namespace)
        return {
          namespace: entry.namespace,
          type: entry.type,
          source: sourceOf(entry),
          state: current !== undefined ? "imported" : error !== undefined ? "failed" : "importing",
          operations: current?.operations ?? 0,
          last_error: error ?? null
        }
      })
    const status = yield* SubscriptionRef.make<ReadonlyArray<ImportInfo>>([])
    const publish = Effect.suspend(() => SubscriptionRef.set(status, statusNow()))

    const secretOf = (name: string): Effect.Effect<Redacted.Redacted<string>, AdapterError.AdapterError> =>
      Effect.mapError(CredentialStore.decrypted(store, vault, name), (e) => AdapterError.make("Credential", e.message))

    /** Load an import's registrations; what it opens (an MCP session) lives in the scope. */
    const load = (entry: Import): Effect.Effect<ReadonlyArray<Operation.HandlerRegistration>, AdapterError.AdapterError, Scope.Scope> =>
      Effect.gen(function*() {
        const secret = entry.credential === undefined ? undefined : yield* secretOf(entry.credential)
        const exported = entry.export_as === "external" && entry.access !== undefined
          ? { visibility: "external" as const, access: accessOf(entry.access) }
          : { visibility: "internal" as const }
        if (entry.type === "mcp") {
          const remote = yield* FromMcp.connect({ url: sourceOf(entry), ...(secret === undefined ? {} : { token: secret }) })
          return yield* FromMcp.fromMcp(remote, { namespace: entry.namespace, ...exported }).import()
        }
        const text = entry.url !== undefined ? yield* download(entry.url, maxBytes) : yield* readFile(sourceOf(entry), maxBytes)
        const document = yield* FromOpenApi.parse(text)
        return yield* FromOpenApi.fromOpenApi(document, {
          namespace: entry.namespace,
          ...(entry.base_url === undefined ? {} : { baseUrl: entry.base_url }),
          ...(entry.url === undefined ? {} : { documentUrl: entry.url }),
          ...(secret === undefined ? {} : { credential: credentialOf(entry.auth, secret) }),
          ...exported
        }).import()
      }).pipe(
        Effect.timeoutFail({
          duration: timeout,
          onTimeout: () => AdapterError.make("Transport", `timed out after ${Duration.format(timeout)} loading ${sourceOf(entry)}`)
        })
      )

    /** Load and attach one import; on failure the previous version (if any) stays. */
    const attach = (entry: Import) =>
      Effect.gen(function*() {
        const scope = yield* Scope.fork(root, ExecutionStrategy.sequential)
        const exit = yield* Effect.exit(Scope.extend(
          Effect.flatMap(load(entry), (registrations) => {
            const taken = registrations.find((r) => options.local?.lookup(r.spec.name) !== undefined)
            return taken !== undefined
              ? Effect.fail(AdapterError.make("SamePeerCollision", `${taken.spec.name} is one of this node's own operations`))
              : Effect.as(graph.add(entry.namespace, registrations, { slot: SLOT }), registrations.length)
          }),
          scope
        ))
        const previous = attached.get(entry.namespace)
        if (Exit.isSuccess(exit)) {
          attached.set(entry.namespace, { key: JSON.stringify(entry), scope, operations: exit.value })
          errors.delete(entry.namespace)
          // Replaced in the graph already (same slot): closing the old scope ends what the old version opened.
          if (previous !== undefined) yield* Scope.close(previous.scope, Exit.void)
          yield* Effect.logInfo(`import ${entry.namespace}: ${exit.value} operations from ${sourceOf(entry)}`)
        } else {
          yield* Scope.close(scope, exit)
          const message = Option.match(Cause.failureOption(exit.cause), {
            onNone: () => "interrupted or failed unexpectedly",
            onSome: (error) => error.message
          })
          errors.set(entry.namespace, message)
          yield* Effect.logError(
            `import ${entry.namespace} (${entry.type} ${sourceOf(entry)}) failed${
              previous === undefined ? "" : "; its previous version stays"
            }: ${message}`
          )
        }
        yield* publish
      })

    const detach = (namespace: string, current: Attached) =>
      Effect.gen(function*() {
        attached.delete(namespace)
        yield* Scope.close(current.scope, Exit.void)
        // Gone, not "away": its operations are NOT_FOUND from now on.
        yield* graph.forget(namespace)
        yield* Effect.logInfo(`import ${namespace}: removed`)
      })

    /** Bring the graph in line with `next`. */
    const apply = (next: ReadonlyArray<Import>) =>
      lock.withPermits(1)(Effect.gen(function*() {
        entries = next
        const wanted = new Map(next.map((entry) => [entry.namespace, entry]))
        for (const namespace of [...errors.keys()]) if (!wanted.has(namespace)) errors.delete(namespace)
        for (const [namespace, current] of [...attached]) if (!wanted.has(namespace)) yield* detach(namespace, current)
        const todo = next.filter((entry) => attached.get(entry.namespace)?.key !== JSON.stringify(entry))
        // Back to the version that is attached: what failed was another version, no longer wanted.
        for (const entry of next) if (!todo.includes(entry)) errors.delete(entry.namespace)
        yield* publish
        yield* Effect.forEach(todo, attach, { concurrency: "unbounded", discard: true })
      }))

    yield* Effect.addFinalizer(() =>
      lock.withPermits(1)(Effect.forEach([...attached], ([namespace, current]) => detach(namespace, current), { discard: true }))
    )
    yield* Effect.forkScoped(Stream.runForEach(options.changes, apply))

    return {
      status: SubscriptionRef.get(status),
      changes: status.changes
    }
  })
