/**
 * Another node's process writing to a PostgreSQL store — the other side of the cross-process tests and of
 * `bench/identity.ts`. Run with `node --import tsx test/layers/pg/other-node.ts <url> <mode> …`:
 *
 * - `many <prefix> <count>`: put peers `<prefix>-0 … <prefix>-<count-1>` through its own store, one commit each;
 * - `revoke <prefix>`: remove the API key `<prefix>` through its own store;
 * - `serve`: for each peer id read from stdin, put that peer through its own store and print
 *   `<peer id> <hrtime ns when the commit returned>` — the start of a propagation measurement.
 *
 * A peer's fingerprint is {@link fingerprintOf} its id (as in the SQLite writer), so the reader knows what to resolve.
 */
import { Effect, Redacted, Stream } from "effect"
import * as readline from "node:readline"
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
    : mode === "revoke"
    ? Effect.flatMap(IdentityStore, (store) => store.removeApiKey(prefix!))
    : Stream.fromAsyncIterable(readline.createInterface({ input: process.stdin }), (e) => e).pipe(
      Stream.runForEach((line) =>
        put(line.trim()).pipe(Effect.andThen(() => process.stdout.write(`${line.trim()} ${process.hrtime.bigint()}\n`)))
      )
    )
  Effect.runPromise(Effect.scoped(Effect.provide(program, PgStore.layer({ url: Redacted.make(url) })))).then(
    () => process.exit(0),
    (error) => {
      process.stderr.write(`writer failed: ${String(error)}\n`)
      process.exit(1)
    }
  )
}
