/**
 * `alknet status --home DIR`: ask the node running from a home how it is, by calling its `node/info` (presenting the
 * home's own key, pinning its fingerprint). The node's own key holds `alknet:admin`, which `node/info` needs to tell
 * its uptime, transports, outbound peers and imports. The node says where it listens in `HOME/node.run.json`, written when it
 * starts serving and removed when it stops; a run file whose pid is gone (the node was killed) says no node runs.
 */
import * as Command from "@effect/cli/Command"
import { Effect, Option, Schema } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import * as NodeHome from "../layers/NodeHome.js"
import { CliError } from "./errors.js"
import * as Io from "./io.js"
import { isAlive } from "./lock.js"
import * as Shared from "./options.js"

/** Where a running node writes its addresses. */
export const runFile = (home: string) => path.join(home, "node.run.json")

const RunInfo = Schema.Struct({
  pid: Schema.Number,
  fingerprint: Schema.String,
  transports: Schema.Array(Schema.Struct({ kind: Schema.String, address: Schema.String }))
})

/** Write the run file (the node calls it once it listens) and remove it when the scope closes. */
export const writeRunFile = (home: string, info: typeof RunInfo.Type) =>
  Effect.acquireRelease(
    Effect.promise(() => fs.writeFile(runFile(home), `${JSON.stringify(info)}\n`)),
    () => Effect.promise(() => fs.rm(runFile(home), { force: true }))
  )

const PeerRow = Schema.Struct({
  peer_id: Schema.String,
  address: Schema.String,
  state: Schema.String,
  attempts: Schema.Number,
  last_error: Schema.NullOr(Schema.String),
  operations: Schema.Number,
  export_as: Schema.String
})
const ImportRow = Schema.Struct({
  namespace: Schema.String,
  type: Schema.String,
  source: Schema.String,
  state: Schema.String,
  operations: Schema.Number,
  last_error: Schema.NullOr(Schema.String)
})
const Info = Schema.Struct({
  id: Schema.String,
  version: Schema.String,
  uptime_ms: Schema.Number,
  transports: Schema.Array(Schema.Struct({ kind: Schema.String, address: Schema.String })),
  peers: Schema.Array(PeerRow),
  imports: Schema.optionalWith(Schema.Array(ImportRow), { default: () => [] }),
  store: Schema.optional(Schema.Struct({
    type: Schema.String,
    target: Schema.String,
    state: Schema.String,
    last_error: Schema.NullOr(Schema.String)
  }))
})

/** An error as the library words it, in the CLI's terms (a pinned fingerprint is `ADDR#FP` on the command line). */
export const cliTerms = (error: string) =>
  error.replace(/pin its fingerprint with expectedFingerprint/g, "pin its fingerprint (ADDR#FP)")

/** `reconnecting (3 attempts)`, `connected`, … */
export const stateOf = (peer: typeof PeerRow.Type) =>
  peer.state === "reconnecting" ? `reconnecting (${peer.attempts} attempt${peer.attempts === 1 ? "" : "s"})` : peer.state

export const command = Command.make(
  "status",
  { home: Shared.home, json: Shared.json },
  (o) =>
    Effect.gen(function*() {
      const home = path.resolve(o.home)
      yield* NodeHome.requireHome(home)
      const text = yield* Effect.tryPromise({
        try: () => fs.readFile(runFile(home), "utf8"),
        catch: () =>
          new CliError({ code: "NotRunning", message: `no node is running from ${home} (no ${runFile(home)})` })
      })
      const run = yield* Schema.decodeUnknown(Schema.parseJson(RunInfo))(text).pipe(
        Effect.mapError(() => new CliError({ code: "Internal", message: `${runFile(home)} is not a run file` }))
      )
      if (!isAlive(run.pid)) {
        return yield* new CliError({
          code: "NotRunning",
          message: `no node is running from ${home}: its node (pid ${run.pid}) stopped without cleaning up ` +
            `(killed?); ${runFile(home)} is left over`
        })
      }
      const quic = run.transports.find((t) => t.kind === "quic")?.address ?? run.transports[0]?.address ?? ""
      const client = yield* Effect.promise(() => import("./client.js"))
      const connection = yield* client.connect(quic, {
        home: Option.some(home),
        fingerprint: Option.some(run.fingerprint),
        token: Option.none(),
        connectTimeout: "5s",
        retries: 0
      })
      const output = yield* connection.call("node/info", {})
      // A node tells its uptime, transports and peers only to an alknet:admin caller; its own key is one.
      if (typeof output !== "object" || output === null || !("peers" in output)) {
        return yield* new CliError({
          code: "CallForbidden",
          message: `the node running from ${home} did not grant this home's key alknet:admin (its TLS identity is ` +
            `not the key status presented: with "tls": {"type": "self_signed"} it changes on every start)`
        })
      }
      if (o.json) return yield* Io.json(output)
      const info = yield* Schema.decodeUnknown(Info)(output).pipe(
        Effect.mapError((e) => new CliError({ code: "Internal", message: `unexpected node/info output: ${e.message}` }))
      )
      yield* Io.out(`node ${info.id} (version ${info.version}, up ${Math.round(info.uptime_ms / 1000)} s)`)
      for (const t of info.transports) yield* Io.out(`listening ${t.address}`)
      if (info.store !== undefined) {
        const { last_error, state, target, type } = info.store
        yield* Io.out(`store ${type} ${target} ${state}${last_error === null ? "" : ` (${last_error})`}`)
      }
      if (info.imports.length > 0) {
        yield* Io.table(
          ["IMPORT", "TYPE", "SOURCE", "STATE", "OPERATIONS", "LAST ERROR"],
          info.imports.map((i) => [i.namespace, i.type, i.source, i.state, String(i.operations), i.last_error ?? "-"])
        )
      }
      if (info.peers.length === 0) return yield* Io.out("no outbound peers")
      yield* Io.table(
        ["PEER", "ADDRESS", "STATE", "OPERATIONS", "EXPORT", "LAST ERROR"],
        info.peers.map((p) => {
          const connected = p.state === "connected"
          return [
            p.peer_id,
            p.address,
            stateOf(p),
            // While the peer is away: what it served when last connected (calls to them fail at once until it is back).
            String(p.operations),
            p.export_as,
            // An error is news only while the peer is not connected (the node keeps the last one).
            connected || p.last_error === null ? "-" : cliTerms(p.last_error)
          ]
        })
      )
    }).pipe(Effect.scoped)
).pipe(Command.withDescription("Show the running node of a home: where it listens, its store, its imports, its outbound peers and their state."))
