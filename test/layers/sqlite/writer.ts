/**
 * A second process writing peers into a SQLite identity store — the other side of the cross-process tests and of
 * `bench/identity.ts`. Run with `node --import tsx test/layers/sqlite/writer.ts <db> <mode> …`:
 *
 * - `many <prefix> <count>`: put peers `<prefix>-0 … <prefix>-<count-1>`, one commit each;
 * - `serve`: for each peer id read from stdin, insert that peer with one plain SQL statement (as any other program
 *   could) and print `<peer id> <hrtime ns when the commit returned>` — the start of a propagation measurement.
 *
 * A peer's fingerprint is {@link fingerprintOf} its id, so the reader knows what to resolve.
 */
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import { Effect, Stream } from "effect"
import * as crypto from "node:crypto"
import * as readline from "node:readline"
import * as SqliteStore from "../../../src/layers/sqlite/SqliteStore.js"
import * as PeerEntry from "../../../src/schema/PeerEntry.js"
import { IdentityStore } from "../../../src/services/IdentityStore.js"

export const fingerprintOf = (peerId: string): string =>
  `ed25519:${crypto.createHash("sha256").update(peerId).digest("hex")}`

const put = (peerId: string) =>
  Effect.flatMap(IdentityStore, (store) =>
    store.putPeer(PeerEntry.make({ peer_id: peerId, fingerprints: [fingerprintOf(peerId)], scopes: ["written"] })))

const [db, mode, prefix, count] = process.argv.slice(2)

if (db !== undefined && process.argv[1]?.endsWith("writer.ts")) {
  const program = mode === "many"
    ? Effect.forEach(Array.from({ length: Number(count) }, (_, i) => `${prefix}-${i}`), put, { discard: true }).pipe(
      Effect.provide(SqliteStore.layer({ filename: db }))
    )
    // Only a plain connection here: no store, no watcher, nothing else competing for the CPU while measuring.
    : Effect.flatMap(SqliteClient.SqliteClient, (sql) =>
      Stream.fromAsyncIterable(readline.createInterface({ input: process.stdin }), (e) => e).pipe(
        Stream.runForEach((line) => {
          const id = line.trim()
          return sql`INSERT INTO peers (peer_id, fingerprints) VALUES (${id}, ${JSON.stringify([fingerprintOf(id)])})`
            .pipe(Effect.andThen(() => process.stdout.write(`${id} ${process.hrtime.bigint()}\n`)))
        })
      )).pipe(Effect.provide(SqliteClient.layer({ filename: db })))
  Effect.runPromise(Effect.scoped(program)).then(
    () => process.exit(0),
    (error) => {
      process.stderr.write(`writer failed: ${String(error)}\n`)
      process.exit(1)
    }
  )
}
