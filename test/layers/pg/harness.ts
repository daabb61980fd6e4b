/**
 * PostgreSQL for the tests: `ALKNET_TEST_PG_URL` names a server where the tests may create and drop databases
 * (`.ci/run` starts a throwaway cluster and sets it; see README "Stores"). Without it the Postgres tests are skipped.
 *
 * Each test gets a database of its own (dropped with the test's scope), and, where it needs to cut a node off, a TCP
 * proxy it can take down and bring back.
 */
import { Effect, Redacted } from "effect"
import type { Scope } from "effect"
import * as crypto from "node:crypto"
import * as net from "node:net"
import pg from "pg"

/** The server the tests use, if any. */
export const serverUrl: string | undefined = process.env.ALKNET_TEST_PG_URL || undefined

export const SKIP_MESSAGE = "PostgreSQL tests skipped: set ALKNET_TEST_PG_URL=postgres://USER@HOST:PORT/postgres " +
  "(a server where databases may be created; .ci/run starts one)"

/** `url` with another database, or another host and port. */
export const withDatabase = (url: string, database: string): string => {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}
export const withPort = (url: string, port: number): string => {
  const u = new URL(url)
  u.hostname = "127.0.0.1"
  u.port = String(port)
  return u.toString()
}

const admin = <A>(f: (client: pg.Client) => Promise<A>) =>
  Effect.promise(async () => {
    const client = new pg.Client({ connectionString: serverUrl })
    await client.connect()
    try {
      return await f(client)
    } finally {
      await client.end()
    }
  })

/** A fresh, empty database on the test server; dropped (connections and all) when the scope closes. */
export const freshDatabase: Effect.Effect<string, never, Scope.Scope> = Effect.acquireRelease(
  Effect.suspend(() => {
    const name = `alknet_test_${crypto.randomBytes(6).toString("hex")}`
    return Effect.as(admin((c) => c.query(`CREATE DATABASE ${name}`)), name)
  }),
  (name) => admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
).pipe(Effect.map((name) => withDatabase(serverUrl!, name)))

/** Run one statement on a database as any other program would (no store). */
export const query = (url: string, text: string, values: ReadonlyArray<unknown> = []) =>
  Effect.promise(async () => {
    const client = new pg.Client({ connectionString: url })
    await client.connect()
    try {
      return (await client.query(text, [...values])).rows as ReadonlyArray<Record<string, unknown>>
    } finally {
      await client.end()
    }
  })

export const redacted = (url: string) => Redacted.make(url)

/** A TCP proxy to the test server that can be taken down (every connection cut, new ones refused) and brought back. */
export interface Proxy {
  readonly port: number
  readonly down: Effect.Effect<void>
  readonly up: Effect.Effect<void>
}

export const proxy: Effect.Effect<Proxy, never, Scope.Scope> = Effect.gen(function*() {
  const target = new URL(serverUrl!)
  const sockets = new Set<net.Socket>()
  let open = true
  const server = yield* Effect.acquireRelease(
    Effect.async<net.Server>((resume) => {
      const s = net.createServer((inbound) => {
        if (!open) return void inbound.destroy()
        const outbound = net.connect(Number(target.port || 5432), target.hostname)
        sockets.add(inbound).add(outbound)
        const close = () => {
          inbound.destroy()
          outbound.destroy()
          sockets.delete(inbound)
          sockets.delete(outbound)
        }
        inbound.on("error", close).on("close", close)
        outbound.on("error", close).on("close", close)
        inbound.pipe(outbound).pipe(inbound)
      })
      s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
    }),
    (s) =>
      Effect.async<void>((resume) => {
        for (const socket of sockets) socket.destroy()
        s.close(() => resume(Effect.void))
      })
  )
  return {
    port: (server.address() as net.AddressInfo).port,
    down: Effect.sync(() => {
      open = false
      for (const socket of sockets) socket.destroy()
      sockets.clear()
    }),
    up: Effect.sync(() => {
      open = true
    })
  }
})
