/**
 * The SQLite backend (SPEC §13): one database file holding peers, API keys and encrypted credentials; one module
 * implementing `IdentityStore` (+ `IdentityProvider`) and `CredentialStore` on it.
 *
 * - WAL mode, a 5 s busy timeout, and schema migrations tracked in `PRAGMA user_version` (run under
 *   `BEGIN IMMEDIATE`, so several processes opening a fresh file at once migrate it exactly once).
 * - Reads are served from memory: the whole content is loaded into an immutable index, swapped atomically.
 * - A write through this layer commits, reloads and swaps before it returns: the next read sees it.
 * - A write by **another process** (or another connection) is picked up without polling: the directory is watched
 *   for changes to the database and its `-wal` file; each wake-up confirms with `PRAGMA data_version` (which
 *   changes only when another connection committed) before reloading. The file event comes from the WAL write; the
 *   writer then syncs the WAL and only then publishes the commit, with no further event. So a wake-up that finds
 *   nothing new re-checks at short, growing intervals ({@link RECHECK_MS}: ten cheap `data_version` reads over
 *   ~100 ms at most) and then sleeps until the next file event.
 * - A reload reads the three tables whole (O(rows)) but decodes only rows that changed since the previous one.
 * - Whatever fails — a statement, a row that does not decode — the previous index keeps serving.
 *
 * This folder is the only place that imports `@effect/sql*`. The driver (`@effect/sql-sqlite-node`, which brings
 * better-sqlite3 and its native addon) is imported when a store is built, not when this module loads: importing
 * `alknet` costs nothing for a program that never opens a database.
 */
import type * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Cause, Context, Effect, Either, Exit, Layer, Option, Queue, Schema } from "effect"
import * as path from "node:path"
import { notFound, StoreError } from "../../errors/StoreError.js"
import * as NodeMetrics from "../../observability/NodeMetrics.js"
import type { ApiKeyEntry } from "../../schema/ApiKeyEntry.js"
import { formatError } from "../../schema/Config.js"
import type { EncryptedData } from "../../schema/EncryptedData.js"
import type { PeerEntry } from "../../schema/PeerEntry.js"
import * as CredentialStore from "../../services/CredentialStore.js"
import * as IdentityProvider from "../../services/IdentityProvider.js"
import * as IdentityStore from "../../services/IdentityStore.js"
import { signalWithin, watchFiles, withWallClock } from "../FileWatch.js"
import { ApiKeyRow, CredentialRow, keyRow, PeerRow, peerRow } from "./rows.js"

export interface Options {
  /** Path of the database file; created (with its tables) if missing. Its directory must exist. */
  readonly filename: string
}

/** Migration n (1-based) brings `user_version` from n-1 to n. Append only; never edit a released step. */
const migrations: ReadonlyArray<ReadonlyArray<string>> = [
  [
    `CREATE TABLE peers (
      peer_id TEXT PRIMARY KEY NOT NULL,
      fingerprints TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(fingerprints)),
      auth_token_hash TEXT,
      scopes TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(scopes)),
      resources TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(resources)),
      display_name TEXT,
      enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1))
    )`,
    `CREATE TABLE api_keys (
      prefix TEXT PRIMARY KEY NOT NULL,
      hash TEXT NOT NULL,
      scopes TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(scopes)),
      description TEXT NOT NULL DEFAULT '',
      expires_at TEXT
    )`,
    `CREATE TABLE credentials (
      provider TEXT PRIMARY KEY NOT NULL,
      key_version INTEGER NOT NULL,
      salt TEXT NOT NULL,
      iv TEXT NOT NULL,
      data TEXT NOT NULL
    )`
  ]
]

/** Gaps between re-checks of `data_version` after a file event that showed no new commit yet. */
const RECHECK_MS = [1, 1, 2, 2, 4, 4, 8, 8, 16, 50] as const

/** SQL errors become `StoreError`s naming the operation and SQLite's result code — never SQL text or values. */
const backend = (operation: string) => (error: SqlError): StoreError => {
  const code = (error.cause as { readonly code?: unknown } | undefined)?.code
  return new StoreError({
    reason: "Backend",
    message: `sqlite: ${operation} failed${typeof code === "string" ? ` (${code})` : ""}`
  })
}

interface Snapshot {
  readonly index: IdentityProvider.Index
  readonly credentials: ReadonlyMap<string, EncryptedData>
}

type Row = Record<string, unknown>

const sameRow = (a: Row, b: Row): boolean => {
  for (const column in b) if (a[column] !== b[column]) return false
  return true
}

/**
 * Decodes a table's rows, or fails naming the first bad row and field. A row identical to one decoded by the
 * previous successful call is not decoded again (its entry object is reused), so a reload after one change costs
 * one decode, not one per row.
 */
const rowDecoder = <A, I>(table: string, key: string, schema: Schema.Schema<A, I>) => {
  const decode = Schema.decodeUnknownEither(schema, { errors: "all" })
  let previous = new Map<unknown, { readonly row: Row; readonly value: A }>()
  return (rows: ReadonlyArray<Row>): Either.Either<ReadonlyArray<A>, StoreError> => {
    const next = new Map<unknown, { readonly row: Row; readonly value: A }>()
    for (const row of rows) {
      const cached = previous.get(row[key])
      if (cached !== undefined && sameRow(cached.row, row)) {
        next.set(row[key], cached)
        continue
      }
      const decoded = decode(row)
      if (Either.isLeft(decoded)) {
        return Either.left(
          new StoreError({
            reason: "Serialization",
            message: `${table} row ${JSON.stringify(row[key])}: ${formatError(decoded.left)}`
          })
        )
      }
      next.set(row[key], { row, value: decoded.right })
    }
    previous = next
    return Either.right(Array.from(next.values(), (entry) => entry.value))
  }
}

/** The driver module, loaded on first use (Node caches it after that). */
const driver = Effect.tryPromise({
  try: () => import("@effect/sql-sqlite-node/SqliteClient"),
  catch: (error) =>
    new StoreError({
      reason: "Backend",
      message: `sqlite: cannot load @effect/sql-sqlite-node: ${error instanceof Error ? error.message : String(error)}`
    })
})

/** Both stores on an open client. */
const makeStores = (sql: SqliteClient.SqliteClient) => Effect.gen(function*() {
  const filename = path.resolve(sql.config.filename)

  yield* sql`PRAGMA busy_timeout = 5000`.pipe(Effect.mapError(backend("configure")))
  yield* migrate(sql)

  const lock = yield* Effect.makeSemaphore(1)
  const dataVersion = Effect.map(
    sql<{ readonly data_version: number }>`PRAGMA data_version`,
    (rows) => rows[0]?.data_version ?? 0
  )

  const readSnapshot = sql.withTransaction(
    Effect.all([
      dataVersion,
      sql`SELECT * FROM peers ORDER BY rowid`,
      sql`SELECT * FROM api_keys ORDER BY rowid`,
      sql`SELECT * FROM credentials`
    ])
  ).pipe(Effect.mapError(backend("load")))

  let seenVersion = -1
  let credentials: ReadonlyMap<string, EncryptedData> = new Map()

  const decodePeers = rowDecoder("peers", "peer_id", PeerRow)
  const decodeApiKeys = rowDecoder("api_keys", "prefix", ApiKeyRow)
  const decodeCredentials = rowDecoder("credentials", "provider", CredentialRow)
  const decodeSnapshot = (
    peerRows: ReadonlyArray<Row>,
    keyRows: ReadonlyArray<Row>,
    credentialRows: ReadonlyArray<Row>
  ): Either.Either<Snapshot, StoreError> =>
    Either.gen(function*() {
      const peers: ReadonlyArray<PeerEntry> = yield* decodePeers(peerRows)
      const apiKeys: ReadonlyArray<ApiKeyEntry> = yield* decodeApiKeys(keyRows)
      const blobs = yield* decodeCredentials(credentialRows)
      return {
        index: IdentityProvider.makeIndex(peers, apiKeys),
        credentials: new Map(blobs.map(({ provider, ...blob }) => [provider, blob]))
      }
    })

  const live = yield* IdentityStore.makeLiveIndex(IdentityProvider.emptyIndex)

  /** Load everything and swap; on any failure the previous index stays. Caller holds `lock`. */
  const reloadLocked = Effect.gen(function*() {
    const [version, peerRows, keyRows, credentialRows] = yield* readSnapshot
    seenVersion = version
    const snapshot = decodeSnapshot(peerRows, keyRows, credentialRows)
    yield* live.update(() =>
      Either.map(snapshot, ({ credentials: blobs, index }) => {
        credentials = blobs
        return index
      })
    )
  })

  /** Reload if another connection committed since the last load. Caller holds `lock`. */
  const checkLocked = Effect.gen(function*() {
    const version = yield* dataVersion.pipe(Effect.mapError(backend("check")))
    if (version === seenVersion) return false
    yield* reloadLocked
    return true
  })

  yield* reloadLocked

  // Writes: the statement, then a reload, under the lock — so snapshots are swapped in commit order. A reload that
  // fails after a committed statement (another writer left a row that does not decode) says so.
  const reloadAfter = (operation: string) =>
    Effect.mapError(reloadLocked, (error) =>
      new StoreError({
        reason: error.reason,
        message: `${operation}: committed, but the index keeps its previous state: ${error.message}`
      }))
  const write = <A>(operation: string, statement: Effect.Effect<A, SqlError>) =>
    lock.withPermits(1)(Effect.zipLeft(Effect.mapError(statement, backend(operation)), reloadAfter(operation)))
  const changes = (result: unknown): number => (result as { readonly changes?: number } | undefined)?.changes ?? 0
  /** A write that must touch a row; `NotFound` (and nothing reloaded) otherwise. */
  const writeExisting = (operation: string, statement: Effect.Effect<unknown, SqlError>, missing: StoreError) =>
    lock.withPermits(1)(
      Effect.mapError(statement, backend(operation)).pipe(
        Effect.filterOrFail((result) => changes(result) > 0, () => missing),
        Effect.zipRight(reloadAfter(operation))
      )
    )

  const putApiKey = (key: ApiKeyEntry) =>
    Effect.flatMap(keyRow(key), (row) =>
      write(
        "put api key",
        sql`INSERT INTO api_keys ${sql.insert(row)} ON CONFLICT (prefix) DO UPDATE SET
          hash = excluded.hash, scopes = excluded.scopes, description = excluded.description,
          expires_at = excluded.expires_at`
      ))

  const identity = IdentityStore.IdentityStore.of({
    ...live.provider,
    getPeer: (peerId) =>
      Effect.sync(() => Option.fromNullable(live.current().peers.find((p) => p.peer_id === peerId))),
    listPeers: Effect.sync(() => live.current().peers),
    putPeer: (peer) =>
      Effect.flatMap(peerRow(peer), (row) =>
        write(
          "put peer",
          sql`INSERT INTO peers ${sql.insert(row)} ON CONFLICT (peer_id) DO UPDATE SET
            fingerprints = excluded.fingerprints, auth_token_hash = excluded.auth_token_hash,
            scopes = excluded.scopes, resources = excluded.resources, display_name = excluded.display_name,
            enabled = excluded.enabled`
        )),
    updatePeer: (peer) =>
      Effect.flatMap(peerRow(peer), ({ peer_id, ...row }) =>
        writeExisting(
          "update peer",
          sql`UPDATE peers SET ${sql.update(row)} WHERE peer_id = ${peer_id}`.raw,
          notFound("peer", peer_id)
        )),
    removePeer: (peerId) =>
      writeExisting("remove peer", sql`DELETE FROM peers WHERE peer_id = ${peerId}`.raw, notFound("peer", peerId)),
    listApiKeys: Effect.sync(() => live.current().apiKeys),
    putApiKey,
    createApiKey: IdentityStore.createApiKeyWith((key) =>
      Effect.flatMap(keyRow(key), (row) =>
        lock.withPermits(1)(
          sql`INSERT INTO api_keys ${sql.insert(row)} ON CONFLICT (prefix) DO NOTHING`.raw.pipe(
            Effect.mapError(backend("create api key")),
            Effect.flatMap((result) =>
              changes(result) > 0 ? Effect.as(reloadAfter("create api key"), true) : Effect.succeed(false)
            )
          )
        ))
    ),
    removeApiKey: (prefix) =>
      writeExisting(
        "remove api key",
        sql`DELETE FROM api_keys WHERE prefix = ${prefix}`.raw,
        notFound("api key", prefix)
      ),
    changes: live.changes
  })

  const credentialStore = CredentialStore.CredentialStore.of({
    ...CredentialStore.fromMap(() => credentials),
    put: (provider, data) =>
      Effect.flatMap(CredentialStore.validate(provider, data), (blob) =>
        write(
          "put credential",
          sql`INSERT INTO credentials ${sql.insert({ provider, ...blob })} ON CONFLICT (provider) DO UPDATE SET
            key_version = excluded.key_version, salt = excluded.salt, iv = excluded.iv, data = excluded.data`
        )),
    delete: (provider) =>
      writeExisting(
        "delete credential",
        sql`DELETE FROM credentials WHERE provider = ${provider}`.raw,
        notFound("credential", provider)
      )
  })

  // Another process's commits: file events, confirmed by data_version.
  const base = path.basename(filename)
  const signal = yield* watchFiles(path.dirname(filename), [base, `${base}-wal`, `${base}-journal`]).pipe(
    Effect.mapError((error) => new StoreError({ reason: "Backend", message: error.message }))
  )
  const check = lock.withPermits(1)(checkLocked).pipe(
    Effect.tap((reloaded) =>
      Effect.sync(() => {
        if (reloaded) NodeMetrics.countReload("sqlite", true)
      })
    ),
    Effect.catchAll((error) =>
      Effect.as(
        Effect.zipRight(
          Effect.sync(() => NodeMetrics.countReload("sqlite", false)),
          Effect.logError(`sqlite ${filename}: reload rejected, previous index stays in force: ${error.message}`)
        ),
        true
      )
    )
  )
  yield* Effect.forkScoped(withWallClock(watchLoop(signal, check)))

  return { identity, credentials: credentialStore }
})

/**
 * Build both stores on the open client in context (`SqliteClient` of `@effect/sql-sqlite-node`). Requires the
 * client's scope to outlive the stores (the watcher is scoped).
 */
export const make = Effect.flatMap(driver, (module) => Effect.flatMap(module.SqliteClient, makeStores))

/**
 * Sleep until a file event; check; if nothing new was committed yet, re-check after each of {@link RECHECK_MS}
 * (a new event cuts the wait short and restarts the sequence), then sleep until the next event.
 */
const watchLoop = (signal: Queue.Dequeue<void>, check: Effect.Effect<boolean>) =>
  Effect.gen(function*() {
    let pending = 0
    while (true) {
      let fresh = true
      if (pending === 0) {
        yield* Queue.take(signal)
      } else {
        const delay = RECHECK_MS[RECHECK_MS.length - pending] ?? 0
        fresh = yield* signalWithin(signal, delay)
      }
      const changed = yield* check
      pending = changed ? 0 : fresh ? RECHECK_MS.length : pending - 1
    }
  })

/** Run the migrations not yet applied, atomically, holding the write lock. */
const migrate = (sql: SqliteClient.SqliteClient) =>
  Effect.acquireUseRelease(
    sql`BEGIN IMMEDIATE`,
    () =>
      Effect.gen(function*() {
        const rows = yield* sql<{ readonly user_version: number }>`PRAGMA user_version`
        const current = rows[0]?.user_version ?? 0
        for (const [step, statements] of migrations.entries()) {
          if (step < current) continue
          for (const statement of statements) yield* sql.unsafe(statement)
          yield* sql.unsafe(`PRAGMA user_version = ${step + 1}`)
        }
        yield* sql`COMMIT`
      }),
    (_, exit) => Exit.isSuccess(exit) ? Effect.void : Effect.ignore(sql`ROLLBACK`)
  ).pipe(Effect.mapError(backend("migrate")))

/** Open (creating if needed) the database and provide all three services from it. */
export const layer = (
  options: Options
): Layer.Layer<
  IdentityStore.IdentityStore | IdentityProvider.IdentityProvider | CredentialStore.CredentialStore,
  StoreError
> =>
  Layer.scopedContext(
    Effect.gen(function*() {
      const { layer: clientLayer } = yield* driver
      const client = yield* Layer.build(clientLayer({ filename: options.filename })).pipe(
        Effect.catchAllCause((cause) => {
          const error = Cause.squash(cause)
          const why = error instanceof Error ? error.message : "unknown error"
          return new StoreError({ reason: "Backend", message: `sqlite: cannot open ${options.filename}: ${why}` })
        })
      )
      const { credentials, identity } = yield* Effect.provide(make, client)
      return Context.make(IdentityStore.IdentityStore, identity).pipe(
        Context.add(IdentityProvider.IdentityProvider, identity),
        Context.add(CredentialStore.CredentialStore, credentials)
      )
    })
  )
