/**
 * Another node's process writing to a PostgreSQL store — the other side of the cross-process tests and of
 * `bench/identity.ts`. Run with `node --import tsx test/layers/pg/other-node.ts <url> <mode> …`:
 *
 * - `many <prefix> <count>`: put peers `<prefix>-0 … <prefix>-<count-1>` through its own store, one commit each;
 * - `revoke <prefix>`: remove the API key `<prefix>` through its own store;
 * - `serve`: for each peer id read from stdin, insert that peer with one plain SQL statement (as any other program
 *   could) and print `<peer id> <hrtime ns when the commit returned>` — the start of a propagation measurement.
 *
 * A peer's fingerprint is {@link fingerprintOf} its id (as in the SQLite writer), so the reader knows what to resolve.
 */
import { Effect, Redacted } from "effect"
import * as readline from "node:readline"
import pg from "pg"
import * as PgStore from "../../../src/layers/pg/PgStore.js"
import * as PeerEntry from "../../../src/schema/PeerEntry.js"
import { IdentityStore } from "../../../src/services/IdentityStore.js"
import { fingerprintOf } from "../sqlite/writer.js"

const put = (peerId: string) =>
  Effect.flatMap(IdentityStore, (store) =>
    store.putPeer(PeerEntry.make({ peer_id: peerId, fingerprints: [fingerprintOf(peerId)], scopes: ["written"] })))

const [url, mode, prefix, count] = process.argv.slice(2)

if (url !== undefined && process.argv[1]?.endsWith("other-node.ts")) {
  const program = mode === "many"
    ? Effect.forEach(Array.from({ length: Number(count) }, (_, i) => `${prefix}-${i}`), put, { discard: true })
    : Effect.flatMap(IdentityStore, (store) => store.removeApiKey(prefix!))
  // `serve`: a plain connection (the commit's time is when the INSERT returned; a store's write returns later, after
  // re-reading its row). The table's trigger notifies the other nodes as for any writer.
  const serve = () =>
    Effect.promise(async () => {
      // The iterator buffers lines from now on (lines read by an interface without one are dropped).
      const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]()
      const client = new pg.Client({ connectionString: url })
      await client.connect()
      for await (const line of { [Symbol.asyncIterator]: () => lines }) {
        const id = line.trim()
        await client.query("INSERT INTO peers (peer_id, fingerprints) VALUES ($1, $2)", [
          id,
          JSON.stringify([fingerprintOf(id)])
        ])
        process.stdout.write(`${id} ${process.hrtime.bigint()}\n`)
      }
      await client.end()
    })
  const run = mode === "serve" ? serve() : Effect.scoped(Effect.provide(program, PgStore.layer({ url: Redacted.make(url) })))
  Effect.runPromise(run).then(
    () => process.exit(0),
    (error) => {
      process.stderr.write(`writer failed: ${String(error)}\n`)
      process.exit(1)
    }
  )
}
