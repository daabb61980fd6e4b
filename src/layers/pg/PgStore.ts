/**
 * The PostgreSQL backend (SPEC §13, issue #17): many nodes, one store. The same three tables and semantics as the
 * SQLite backend — one module implementing `IdentityStore` (+ `IdentityProvider`) and `CredentialStore` — and a
 * `StoreStatus` saying whether the database is reachable.
 *
 * - Migrations run in one transaction holding an advisory lock, so nodes starting at once on a fresh database migrate
 *   it exactly once. A database whose schema is newer than this code knows is refused.
 * - Reads are served from memory: an immutable index, swapped atomically.
 * - Change notification: a trigger on each table calls `pg_notify('alknet_store', {"t": table, "k": key})` in the
 *   writing transaction (delivered on commit), whoever writes — this node, another node, `psql`. Each node LISTENs
 *   on a connection of its own and re-reads only the rows named. (Not `sql.notify()` of @effect/sql-pg 0.53: it sends
 *   `NOTIFY "ch", $1`, which PostgreSQL rejects.) A key too long for a payload notifies its whole table.
 * - Notifications are not durable: on every (re)connect of the listening connection the node LISTENs first, then
 *   re-reads everything, so a node that was cut off converges.
 * - A write through this layer commits, re-reads its row and swaps the index before it returns.
 * - Connection loss: the index stays as it was (reads keep being served), writes fail with `Backend`, the listener
 *   reconnects with backoff (100 ms doubling to 5 s), and one log line marks each state change.
 * - A row that does not decode is logged and ignored: that entry keeps its previous state (absent if it is new),
 *   every other change is applied.
 *
 * The password comes from `Options.password` (the config's `password_env`), or from what `pg` itself reads
 * (`PGPASSWORD`, `~/.pgpass`); it is never logged, and neither is the URL (logs name `host:port/database` only).
 *
 * This folder is the only place that imports `@effect/sql-pg` and `pg`; both are loaded when a store is built.
 */
import type * as PgClient from "@effect/sql-pg/PgClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Cause, Context, Deferred, Effect, Either, Layer, Option, Queue, Redacted, Ref, Schema } from "effect"
import type * as Pg from "pg"
import type { Scope } from "effect"
import { notFound, StoreError } from "../../errors/StoreError.js"
import * as NodeMetrics from "../../observability/NodeMetrics.js"
import type { ApiKeyEntry } from "../../schema/ApiKeyEntry.js"
import { formatError } from "../../schema/Config.js"
import type { EncryptedData } from "../../schema/EncryptedData.js"
import * as CredentialStore from "../../services/CredentialStore.js"
import * as IdentityProvider from "../../services/IdentityProvider.js"
import * as IdentityStore from "../../services/IdentityStore.js"
import * as StoreStatus from "../../services/StoreStatus.js"
import { withWallClock } from "../FileWatch.js"
import { ApiKeyRow, CredentialRow, keyRow, PeerRow, peerRow } from "../sqlite/rows.js"

export interface Options {
  /** `postgres://user@host:port/database` (a password in it works, but belongs in `password`). */
  readonly url: Redacted.Redacted<string>
  /** The password, if not in the URL nor in pg's own sources (`PGPASSWORD`, `~/.pgpass`). */
  readonly password?: Redacted.Redacted<string>
}

/** The notification channel (one per database). */
export const CHANNEL = "alknet_store"
/** `pg_advisory_xact_lock` key held while migrating ("alknet" in ASCII). */
const MIGRATION_LOCK = 0x616c6b6e6574

const notifyFunction = `CREATE FUNCTION alknet_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  k text;
BEGIN
  IF TG_LEVEL = 'STATEMENT' THEN
    PERFORM pg_notify('${CHANNEL}', json_build_object('t', TG_TABLE_NAME)::text);
    RETURN NULL;
  END IF;
  FOREACH k IN ARRAY ARRAY[to_jsonb(OLD) ->> TG_ARGV[0], to_jsonb(NEW) ->> TG_ARGV[0]] LOOP
    IF k IS NULL THEN CONTINUE; END IF;
    IF octet_length(k) > 4000 THEN
      PERFORM pg_notify('${CHANNEL}', json_build_object('t', TG_TABLE_NAME)::text);
    ELSE
      PERFORM pg_notify('${CHANNEL}', json_build_object('t', TG_TABLE_NAME, 'k', k)::text);
    END IF;
  END LOOP;
  RETURN NULL;
END
$$`

const triggers = (table: string, key: string) => [
  `CREATE TRIGGER ${table}_notify AFTER INSERT OR UPDATE OR DELETE ON ${table}
    FOR EACH ROW EXECUTE FUNCTION alknet_notify('${key}')`,
  `CREATE TRIGGER ${table}_truncate AFTER TRUNCATE ON ${table} FOR EACH STATEMENT EXECUTE FUNCTION alknet_notify()`
]

/**
 * Migration n (1-based) brings `alknet_schema.version` from n-1 to n. Append only; never edit a released step. The
 * columns are those of the SQLite tables, in PostgreSQL types (`jsonb`, `boolean`), plus `seq`: insertion order,
 * which "the first enabled peer" refers to.
 */
const migrations: ReadonlyArray<ReadonlyArray<string>> = [
  [
    `CREATE TABLE peers (
      seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
      peer_id TEXT PRIMARY KEY,
      fingerprints JSONB NOT NULL DEFAULT '[]',
      auth_token_hash TEXT,
      scopes JSONB NOT NULL DEFAULT '[]',
      resources JSONB NOT NULL DEFAULT '{}',
      display_name TEXT,
      enabled BOOLEAN NOT NULL DEFAULT TRUE
    )`,
    `CREATE TABLE api_keys (
      seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
      prefix TEXT PRIMARY KEY,
      hash TEXT NOT NULL,
      scopes JSONB NOT NULL DEFAULT '[]',
      description TEXT NOT NULL DEFAULT '',
      expires_at TEXT
    )`,
    `CREATE TABLE credentials (
      seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
      provider TEXT PRIMARY KEY,
      key_version INTEGER NOT NULL,
      salt TEXT NOT NULL,
      iv TEXT NOT NULL,
      data TEXT NOT NULL
    )`,
    notifyFunction,
    ...triggers("peers", "peer_id"),
    ...triggers("api_keys", "prefix"),
    ...triggers("credentials", "provider")
  ]
]

/** The schema version this code knows. */
export const SCHEMA_VERSION = migrations.length

/** Where the database is, without credentials: `host:port/database`. */
export const describeTarget = (url: Redacted.Redacted<string>): string => {
  try {
    const u = new URL(Redacted.value(url))
    return `${u.hostname || "localhost"}:${u.port || "5432"}${u.pathname || "/"}`
  } catch {
    return "(unparsable url)"
  }
}

/** A driver or server error, described without SQL text, values or credentials: its code (SQLSTATE or errno). */
const codeOf = (cause: unknown): string | undefined => {
  const code = (cause as { readonly code?: unknown } | undefined)?.code
  return typeof code === "string" ? code : undefined
}
const reasonOf = (cause: unknown): string => {
  const inner = (cause as { readonly cause?: unknown } | undefined)?.cause ?? cause
  const code = codeOf(inner)
  const message = inner instanceof Error ? inner.message : undefined
  // Connection errors (ECONNREFUSED …) and server messages about the connection are safe to show; a failed
  // statement is named by its SQLSTATE only.
  if (code !== undefined && /^E[A-Z]+$/.test(code)) return code
  if (code !== undefined) return `SQLSTATE ${code}`
  return message !== undefined && message.length < 200 ? message : "unknown error"
}

/** Why a connection failed or closed: its code and the server's or socket's own words. */
const connectionReason = (error: unknown): string => {
  const code = codeOf(error)
  const message = error instanceof Error ? error.message.slice(0, 200) : undefined
  return [code, message].filter((part) => part !== undefined && part !== "").join(": ") || "unknown error"
}

const backend = (operation: string) => (error: SqlError): StoreError =>
  new StoreError({ reason: "Backend", message: `postgres: ${operation} failed (${reasonOf(error.cause)})` })

type Row = Record<string, unknown>
type TableName = "peers" | "api_keys" | "credentials"

interface Entry<A> {
  readonly seq: number
  readonly row: Row
  readonly value: A
}

const sameRow = (a: Row, b: Row): boolean => {
  for (const column in b) if (a[column] !== b[column]) return false
  return true
}

/** One table's decoded rows by key; replaced whole on change. */
interface Table<A> {
  readonly name: TableName
  readonly key: string
  readonly decode: (row: Row) => Either.Either<A, StoreError>
  entries: ReadonlyMap<string, Entry<A>>
}

const table = <A, I>(name: TableName, key: string, schema: Schema.Schema<A, I>): Table<A> => {
  const decode = Schema.decodeUnknownEither(schema, { errors: "all" })
  return {
    name,
    key,
    entries: new Map(),
    decode: (row) =>
      Either.mapLeft(decode(row), (error) =>
        new StoreError({
          reason: "Serialization",
          message: `${name} row ${JSON.stringify(row[key])}: ${formatError(error)}`
        }))
  }
}

/**
 * Apply rows read from `t` for `keys` (all keys when `undefined`): a row present is decoded (unless unchanged), a key
 * without a row is removed. Returns whether an entry changed, and the rows that did not decode (their entries keep
 * their previous state).
 */
const apply = <A>(t: Table<A>, keys: ReadonlyArray<string> | undefined, rows: ReadonlyArray<Row>) => {
  const next = new Map(t.entries)
  const seen = new Set<string>()
  const rejected: Array<StoreError> = []
  let changed = false
  for (const row of rows) {
    const k = String(row[t.key])
    seen.add(k)
    const old = next.get(k)
    if (old !== undefined && sameRow(old.row, row)) continue
    const decoded = t.decode(row)
    if (Either.isLeft(decoded)) rejected.push(decoded.left)
    else {
      next.set(k, { seq: Number(row.seq), row, value: decoded.right })
      changed = true
    }
  }
  for (const k of keys ?? [...next.keys()]) if (!seen.has(k)) changed = next.delete(k) || changed
  if (changed) t.entries = next
  return { changed, rejected }
}

const ordered = <A>(t: Table<A>): ReadonlyArray<A> =>
  Array.from(t.entries.values()).sort((a, b) => a.seq - b.seq).map((e) => e.value)

/** The driver modules, loaded on first use. */
const driver = Effect.tryPromise({
  try: () => Promise.all([import("@effect/sql-pg/PgClient"), import("pg")]),
  catch: (error) =>
    new StoreError({
      reason: "Backend",
      message: `postgres: cannot load @effect/sql-pg / pg: ${error instanceof Error ? error.message : String(error)}`
    })
})

/** Run the migrations not yet applied, in one transaction holding the migration lock; refuse a newer schema. */
const migrate = (sql: PgClient.PgClient) =>
  sql.withTransaction(Effect.gen(function*() {
    yield* sql`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`
    yield* sql`CREATE TABLE IF NOT EXISTS alknet_schema (version INTEGER NOT NULL)`
    const rows = yield* sql<{ readonly version: number }>`SELECT version FROM alknet_schema`
    if (rows.length === 0) yield* sql`INSERT INTO alknet_schema (version) VALUES (0)`
    const current = rows[0]?.version ?? 0
    if (current > migrations.length) return current
    for (const [step, statements] of migrations.entries()) {
      if (step < current) continue
      for (const statement of statements) yield* sql.unsafe(statement)
      yield* sql`UPDATE alknet_schema SET version = ${step + 1}`
    }
    return current
  })).pipe(
    Effect.mapError(backend("migrate")),
    Effect.filterOrFail((current) => current <= migrations.length, (current) =>
      new StoreError({
        reason: "Backend",
        message: `postgres: the database's schema is version ${current}, newer than this node knows ` +
          `(${migrations.length}): upgrade alknet`
      }))
  )

interface Stores {
  readonly identity: IdentityStore.Service
  readonly credentials: CredentialStore.Service
  readonly status: StoreStatus.StoreStatus["Type"]
}

/** Both stores and their status on an open client; `listen` opens the notification connection. */
const makeStores = (
  sql: PgClient.PgClient,
  listenClient: () => Pg.Client,
  target: string
): Effect.Effect<Stores, StoreError, Scope.Scope> =>
  Effect.gen(function*() {
    yield* migrate(sql)

    const peers = table("peers", "peer_id", PeerRow)
    const apiKeys = table("api_keys", "prefix", ApiKeyRow)
    const creds = table("credentials", "provider", CredentialRow)
    const tables = { peers, api_keys: apiKeys, credentials: creds } as const
    let credentials: ReadonlyMap<string, EncryptedData> = new Map()
    const live = yield* IdentityStore.makeLiveIndex(IdentityProvider.emptyIndex)
    const lock = yield* Effect.makeSemaphore(1)

    const where = (column: string, keys: ReadonlyArray<string> | undefined) =>
      keys === undefined ? sql`TRUE` : sql.in(column, keys)
    const select = (name: TableName, keys: ReadonlyArray<string> | undefined): Effect.Effect<ReadonlyArray<Row>, SqlError> => {
      switch (name) {
        case "peers":
          return sql`SELECT seq::float8 AS seq, peer_id, fingerprints::text AS fingerprints, auth_token_hash,
            scopes::text AS scopes, resources::text AS resources, display_name, enabled::int AS enabled
            FROM peers WHERE ${where("peer_id", keys)} ORDER BY seq`
        case "api_keys":
          return sql`SELECT seq::float8 AS seq, prefix, hash, scopes::text AS scopes, description, expires_at
            FROM api_keys WHERE ${where("prefix", keys)} ORDER BY seq`
        case "credentials":
          return sql`SELECT seq::float8 AS seq, provider, key_version, salt, iv, data
            FROM credentials WHERE ${where("provider", keys)} ORDER BY seq`
      }
    }

    /** Swap in a new index and credential map built from the tables. */
    const publish = Effect.suspend(() => {
      const index = IdentityProvider.makeIndex(ordered(peers), ordered(apiKeys))
      credentials = new Map(ordered(creds).map(({ provider, ...blob }) => [provider, blob]))
      return live.update(() => Either.right(index))
    })

    /**
     * Re-read the named rows (every row of a table mapped to `undefined`) in one snapshot, apply and publish. Caller
     * holds `lock`. Returns the rows that did not decode.
     */
    const refreshLocked = (changed: ReadonlyMap<TableName, ReadonlyArray<string> | undefined>) =>
      Effect.gen(function*() {
        const names = [...changed.keys()]
        const results = yield* sql.withTransaction(
          Effect.forEach(names, (name) => select(name, changed.get(name)))
        ).pipe(Effect.mapError(backend("load")))
        const applied = names.map((name, i) => apply(tables[name] as Table<unknown>, changed.get(name), results[i]!))
        // A re-read that found nothing new (this node's own write, notified back to it) swaps nothing.
        if (applied.some((a) => a.changed)) yield* publish
        return applied.flatMap((a) => a.rejected)
      })

    const everything = new Map<TableName, undefined>([["peers", undefined], ["api_keys", undefined], [
      "credentials",
      undefined
    ]])
    const logRejected = (rejected: ReadonlyArray<StoreError>) =>
      Effect.forEach(
        rejected,
        (e) => Effect.logError(`postgres ${target}: ${e.message}; that entry keeps its previous state`),
        { discard: true }
      )
    /** A reload from the database (a notification, a reconnect): counted, rows that did not decode logged. */
    const refresh = (changed: ReadonlyMap<TableName, ReadonlyArray<string> | undefined>) =>
      lock.withPermits(1)(refreshLocked(changed)).pipe(
        Effect.tapBoth({
          onFailure: () => Effect.sync(() => NodeMetrics.countReload("postgres", false)),
          onSuccess: (rejected) => Effect.sync(() => NodeMetrics.countReload("postgres", rejected.length === 0))
        }),
        Effect.flatMap(logRejected)
      )

    // Writes: the statement (its trigger notifies every node on commit), then this node re-reads the row.
    const after = (operation: string, name: TableName, key: string) =>
      lock.withPermits(1)(refreshLocked(new Map([[name, [key]]]))).pipe(
        Effect.flatMap((rejected) =>
          rejected.length === 0 ? Effect.void : Effect.fail(
            new StoreError({
              reason: "Serialization",
              message: `${operation}: committed, but the index keeps its previous state: ${rejected[0]!.message}`
            })
          )
        )
      )
    const write = (operation: string, name: TableName, key: string, statement: Effect.Effect<unknown, SqlError>) =>
      Effect.zipRight(Effect.mapError(statement, backend(operation)), after(operation, name, key))
    /** A write that must touch a row (its statement returns the rows touched); `NotFound` otherwise. */
    const writeExisting = (
      operation: string,
      name: TableName,
      key: string,
      statement: Effect.Effect<ReadonlyArray<unknown>, SqlError>,
      missing: StoreError
    ) =>
      Effect.mapError(statement, backend(operation)).pipe(
        Effect.filterOrFail((rows) => rows.length > 0, () => missing),
        Effect.zipRight(after(operation, name, key))
      )


    const putApiKey = (key: ApiKeyEntry) =>
      Effect.flatMap(keyRow(key), (r) =>
        write(
          "put api key",
          "api_keys",
          r.prefix,
          sql`INSERT INTO api_keys (prefix, hash, scopes, description, expires_at)
            VALUES (${r.prefix}, ${r.hash}, ${r.scopes}::jsonb, ${r.description}, ${r.expires_at})
            ON CONFLICT (prefix) DO UPDATE SET hash = excluded.hash, scopes = excluded.scopes,
            description = excluded.description, expires_at = excluded.expires_at`
        ))

    const identity = IdentityStore.IdentityStore.of({
      ...live.provider,
      getPeer: (peerId) =>
        Effect.sync(() => Option.fromNullable(live.current().peers.find((p) => p.peer_id === peerId))),
      listPeers: Effect.sync(() => live.current().peers),
      putPeer: (peer) =>
        Effect.flatMap(peerRow(peer), (r) =>
          write(
            "put peer",
            "peers",
            r.peer_id,
            sql`INSERT INTO peers (peer_id, fingerprints, auth_token_hash, scopes, resources, display_name, enabled)
              VALUES (${r.peer_id}, ${r.fingerprints}::jsonb, ${r.auth_token_hash}, ${r.scopes}::jsonb,
                ${r.resources}::jsonb, ${r.display_name}, ${r.enabled === 1})
              ON CONFLICT (peer_id) DO UPDATE SET fingerprints = excluded.fingerprints,
                auth_token_hash = excluded.auth_token_hash, scopes = excluded.scopes, resources = excluded.resources,
                display_name = excluded.display_name, enabled = excluded.enabled`
          )),
      updatePeer: (peer) =>
        Effect.flatMap(peerRow(peer), (r) =>
          writeExisting(
            "update peer",
            "peers",
            r.peer_id,
            sql`UPDATE peers SET fingerprints = ${r.fingerprints}::jsonb, auth_token_hash = ${r.auth_token_hash},
              scopes = ${r.scopes}::jsonb, resources = ${r.resources}::jsonb, display_name = ${r.display_name},
              enabled = ${r.enabled === 1}
              WHERE peer_id = ${r.peer_id} RETURNING peer_id`,
            notFound("peer", r.peer_id)
          )),
      removePeer: (peerId) =>
        writeExisting(
          "remove peer",
          "peers",
          peerId,
          sql`DELETE FROM peers WHERE peer_id = ${peerId} RETURNING peer_id`,
          notFound("peer", peerId)
        ),
      listApiKeys: Effect.sync(() => live.current().apiKeys),
      putApiKey,
      createApiKey: IdentityStore.createApiKeyWith((key) =>
        Effect.flatMap(keyRow(key), (r) =>
          sql`INSERT INTO api_keys (prefix, hash, scopes, description, expires_at)
            VALUES (${r.prefix}, ${r.hash}, ${r.scopes}::jsonb, ${r.description}, ${r.expires_at})
            ON CONFLICT (prefix) DO NOTHING RETURNING prefix`.pipe(
            Effect.mapError(backend("create api key")),
            Effect.flatMap((rows) =>
              rows.length > 0
                ? Effect.as(after("create api key", "api_keys", r.prefix), true)
                : Effect.succeed(false)
            )
          ))
      ),
      removeApiKey: (prefix) =>
        writeExisting(
          "remove api key",
          "api_keys",
          prefix,
          sql`DELETE FROM api_keys WHERE prefix = ${prefix} RETURNING prefix`,
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
            "credentials",
            provider,
            sql`INSERT INTO credentials (provider, key_version, salt, iv, data)
              VALUES (${provider}, ${blob.key_version}, ${blob.salt}, ${blob.iv}, ${blob.data})
              ON CONFLICT (provider) DO UPDATE SET key_version = excluded.key_version, salt = excluded.salt,
              iv = excluded.iv, data = excluded.data`
          )),
      delete: (provider) =>
        writeExisting(
          "delete credential",
          "credentials",
          provider,
          sql`DELETE FROM credentials WHERE provider = ${provider} RETURNING provider`,
          notFound("credential", provider)
        )
    })

    // --- Change notification -------------------------------------------------------------------------------
    // Notifications name rows; they are gathered here (each key once) until the applier takes them.
    let pending = new Map<TableName, Set<string> | undefined>()
    const wake = yield* Queue.sliding<void>(1)
    const note = (payload: string) => {
      let t: unknown
      let k: unknown
      try {
        ;({ k, t } = JSON.parse(payload) as { t?: unknown; k?: unknown })
      } catch {
        return
      }
      if (t !== "peers" && t !== "api_keys" && t !== "credentials") return
      if (typeof k !== "string") pending.set(t, undefined)
      else if (!pending.has(t)) pending.set(t, new Set([k]))
      else pending.get(t)?.add(k)
      Queue.unsafeOffer(wake, undefined)
    }
    /** Put a batch that could not be read back into `pending` (merged with what arrived meanwhile). */
    const retry = (batch: Map<TableName, Set<string> | undefined>) => {
      for (const [name, keys] of batch) {
        const now = pending.get(name)
        if (keys === undefined || (pending.has(name) && now === undefined)) pending.set(name, undefined)
        else pending.set(name, new Set([...keys, ...(now ?? [])]))
      }
    }
    const applier = Effect.gen(function*() {
      let delay = 50
      while (true) {
        yield* Queue.take(wake)
        const batch = pending
        pending = new Map()
        if (batch.size === 0) continue
        // Many keys at once (a bulk change): read the table instead of a statement with thousands of parameters.
        const changed = new Map(
          Array.from(batch, ([name, keys]) => [name, keys === undefined || keys.size > 1000 ? undefined : [...keys]])
        )
        const failed = yield* refresh(changed).pipe(
          Effect.as(false),
          // Said once per streak of failures (a database that is away is also said by the listener).
          Effect.catchAll((error) =>
            Effect.as(delay === 50 ? Effect.logWarning(`postgres ${target}: ${error.message}; retrying`) : Effect.void, true)
          )
        )
        if (!failed) {
          delay = 50
          continue
        }
        // The read failed (the database is going away, or a transient error): keep the batch and try again later; a
        // reconnect re-reads everything anyway.
        retry(batch)
        yield* Effect.sleep(delay)
        delay = Math.min(delay * 2, 5000)
        yield* Queue.offer(wake, undefined)
      }
    })

    const status = yield* Ref.make<StoreStatus.Status>({
      type: "postgres",
      target,
      state: "disconnected",
      since: Date.now(),
      last_error: null
    })
    const setState = (state: StoreStatus.Status["state"], lastError: string | null) =>
      Effect.flatMap(Ref.get(status), (s) =>
        s.state === state
          ? Ref.set(status, { ...s, last_error: lastError })
          : Effect.zipRight(
            Ref.set(status, { ...s, state, since: Date.now(), last_error: lastError }),
            state === "connected"
              ? (s.last_error === null
                ? Effect.logDebug(`postgres ${target}: connected`)
                : Effect.logInfo(`postgres ${target}: reconnected; index re-read`))
              : Effect.logWarning(
                `postgres ${target}: connection lost (${lastError}); serving the last good index, reconnecting`
              )
          ))

    /**
     * One life of the listening connection: connect, LISTEN, re-read everything, then wait until it breaks. Fails
     * when it cannot get that far; succeeds with why it closed.
     */
    const listenOnce = (connected: Effect.Effect<void>) =>
      Effect.gen(function*() {
        const client = listenClient()
        const closed = yield* Deferred.make<string>()
        // Errors on this connection are about the connection (no statement of ours is in them): say what happened.
        client.on("error", (error) => Deferred.unsafeDone(closed, Effect.succeed(connectionReason(error))))
        client.on("end", () => Deferred.unsafeDone(closed, Effect.succeed("connection closed")))
        client.on("notification", (message) => {
          if (message.channel === CHANNEL && message.payload !== undefined) note(message.payload)
        })
        yield* Effect.addFinalizer(() => Effect.promise(() => client.end().catch(() => undefined)))
        const step = (what: string, run: () => Promise<unknown>) =>
          Effect.tryPromise({
            try: run,
            catch: (cause) => new StoreError({ reason: "Backend", message: `postgres: ${what} failed (${reasonOf(cause)})` })
          })
        yield* step("connect", () => client.connect())
        yield* step("listen", () => client.query(`LISTEN ${CHANNEL}`))
        // Whatever was committed before LISTEN took effect is read now; whatever comes after is notified.
        pending = new Map()
        yield* refresh(everything)
        yield* connected
        return yield* Deferred.await(closed)
      }).pipe(Effect.scoped)

    const first = yield* Deferred.make<void, StoreError>()
    const listener = Effect.gen(function*() {
      let delay = 100
      while (true) {
        const connected = Effect.zipRight(setState("connected", null), Deferred.succeed(first, undefined))
        const result = yield* Effect.either(listenOnce(Effect.asVoid(connected)))
        if (Either.isRight(result)) delay = 100
        const why = Either.isRight(result) ? result.right : result.left.message
        // Before the first connection, a failure is the layer's failure.
        if (yield* Deferred.fail(first, new StoreError({ reason: "Backend", message: why }))) return
        yield* setState("disconnected", why)
        yield* Effect.sleep(delay)
        delay = Math.min(delay * 2, 5000)
      }
    })
    yield* Effect.forkScoped(withWallClock(applier))
    yield* Effect.forkScoped(withWallClock(listener))
    yield* Deferred.await(first)

    return {
      identity,
      credentials: credentialStore,
      status: StoreStatus.StoreStatus.of({ current: Ref.get(status) })
    }
  })

/** Open the database (migrating it if needed) and provide the stores and their status from it. */
export const layer = (
  options: Options
): Layer.Layer<
  | IdentityStore.IdentityStore
  | IdentityProvider.IdentityProvider
  | CredentialStore.CredentialStore
  | StoreStatus.StoreStatus,
  StoreError
> =>
  Layer.scopedContext(
    Effect.gen(function*() {
      const [PgClient, pg] = yield* driver
      const target = describeTarget(options.url)
      const password = options.password === undefined ? {} : { password: options.password }
      const client = yield* Layer.build(
        PgClient.layer({
          url: options.url,
          ...password,
          applicationName: "alknet",
          maxConnections: 4,
          connectTimeout: "10 seconds"
        })
      ).pipe(
        Effect.catchAllCause((cause) =>
          new StoreError({
            reason: "Backend",
            message: `postgres: cannot connect to ${target}: ${reasonOf(Cause.squash(cause))}`
          })
        )
      )
      const sql = Context.get(client, PgClient.PgClient)
      const Client = pg.default?.Client ?? (pg as unknown as typeof Pg).Client
      const listenClient = () =>
        new Client({
          connectionString: Redacted.value(options.url),
          ...(options.password === undefined ? {} : { password: Redacted.value(options.password) }),
          application_name: "alknet-listen",
          keepAlive: true,
          connectionTimeoutMillis: 10_000
        })
      const { credentials, identity, status } = yield* makeStores(sql, listenClient, target)
      return Context.make(IdentityStore.IdentityStore, identity).pipe(
        Context.add(IdentityProvider.IdentityProvider, identity),
        Context.add(CredentialStore.CredentialStore, credentials),
        Context.add(StoreStatus.StoreStatus, status)
      )
    })
  )
