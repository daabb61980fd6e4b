/**
 * Talking to a node: `alknet call`, `subscribe`, `ls`, `schema`.
 *
 * The client presents the identity of `--home` (its node key) or an ephemeral one, sends `--token` (or
 * `$ALKNET_TOKEN`) as `auth_token`, and pins `--fingerprint`. A raw-key node can only be reached with its fingerprint
 * pinned: without one the connection fails closed (SPEC §3). Connecting retries `--retries` times when nothing
 * answers, with progress on stderr.
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Config, Effect, Option, Redacted, Schema, Stream } from "effect"
import { compact } from "../internal/compact.js"
import type * as Client from "./client.js"
import { CliError } from "./errors.js"
import * as Io from "./io.js"
import * as Shared from "./options.js"

const address = Args.text({ name: "address" }).pipe(
  Args.withDescription("the node: quic://HOST:PORT, ws://HOST:PORT or wss://HOST:PORT")
)
const operation = Args.text({ name: "operation" }).pipe(Args.withDescription("the operation, e.g. node/info"))
const input = Args.text({ name: "json" }).pipe(
  Args.withDescription("the input as JSON (default {}); - reads it from stdin"),
  Args.optional
)

const connection = {
  home: Shared.clientHome,
  fingerprint: Options.text("fingerprint").pipe(
    Options.withPseudoName("FP"),
    Options.withDescription("the node's fingerprint (ed25519:…): pinned; required for a raw-key node"),
    Options.optional
  ),
  token: Options.redacted("token").pipe(
    Options.withPseudoName("TOKEN"),
    Options.withDescription("bearer token sent with every call (default $ALKNET_TOKEN)"),
    Options.withFallbackConfig(Config.redacted("ALKNET_TOKEN")),
    Options.optional
  ),
  connectTimeout: Options.text("connect-timeout").pipe(
    Options.withPseudoName("DURATION"),
    Options.withDescription("give up one connection attempt after this long"),
    Options.withDefault("5s")
  ),
  retries: Options.integer("retries").pipe(
    Options.withPseudoName("N"),
    Options.withDescription("connection attempts after the first when nothing answers"),
    Options.withDefault(2)
  )
}

/** Connect with the command's credentials (the QUIC and WebSocket client load only for commands that connect). */
const connect = (target: string, o: Client.ConnectionOptions) =>
  Effect.flatMap(Effect.promise(() => import("./client.js")), (client) => client.connect(target, o))

/** The input argument: JSON text, `-` for stdin, `{}` when absent. */
const parseInput = (text: Option.Option<string>) =>
  Effect.gen(function*() {
    if (Option.isNone(text)) return {}
    const source = text.value === "-" ? Redacted.value(yield* Io.readRest("the JSON input")) : text.value
    try {
      return JSON.parse(source) as unknown
    } catch (e) {
      return yield* new CliError({
        code: "BadJson",
        message: `invalid JSON input: ${e instanceof Error ? e.message : String(e)}`
      })
    }
  })

const timeout = Options.text("timeout").pipe(
  Options.withPseudoName("DURATION"),
  Options.withDescription("the call's deadline, e.g. 10s (default: the node's, 30s)"),
  Options.optional
)

const call = Command.make(
  "call",
  { address, operation, input, timeout, ...connection },
  (o) =>
    Effect.gen(function*() {
      const value = yield* parseInput(o.input)
      const deadline = Option.isSome(o.timeout) ? yield* Shared.parseDuration("--timeout", o.timeout.value) : undefined
      const client = yield* connect(o.address, o)
      yield* Io.json(yield* client.call(o.operation, value, compact({ timeout: deadline })))
    }).pipe(Effect.scoped)
).pipe(Command.withDescription("Call an operation and print its output as JSON."))

const subscribe = Command.make(
  "subscribe",
  { address, operation, input, ...connection },
  (o) =>
    Effect.gen(function*() {
      const value = yield* parseInput(o.input)
      const client = yield* connect(o.address, o)
      yield* Stream.runForEach(client.subscribe(o.operation, value), (item) => Io.json(item, true))
    }).pipe(Effect.scoped)
).pipe(Command.withDescription("Subscribe and print one JSON line per item; Ctrl-C aborts the subscription."))

const Listing = Schema.Struct({
  operations: Schema.Array(Schema.Struct({ name: Schema.String, namespace: Schema.String, op_type: Schema.String }))
})

const PeerListing = Schema.Struct({
  peers: Schema.Array(Schema.Struct({ peer_id: Schema.String, operations: Listing.fields.operations }))
})

const peersFlag = Options.boolean("peers").pipe(
  Options.withDescription("list each peer's operations (services/list-peers; the node must serve it: list_peers)")
)

const ls = Command.make(
  "ls",
  { address, json: Shared.json, peers: peersFlag, ...connection },
  (o) =>
    Effect.gen(function*() {
      const client = yield* connect(o.address, o)
      if (o.peers) {
        const listed = yield* client.call("services/list-peers", {}).pipe(
          Effect.catchIf((e) => e.code === "NOT_FOUND", () =>
            new CliError({
              code: "CallNotFound",
              message: `${o.address} does not serve services/list-peers (its config enables it with "list_peers": true)`
            }))
        )
        if (o.json) return yield* Io.json(listed)
        const byPeer = yield* Schema.decodeUnknown(PeerListing)(listed).pipe(
          Effect.mapError((e) =>
            new CliError({ code: "Internal", message: `unexpected services/list-peers output: ${e.message}` })
          )
        )
        return yield* Io.table(
          ["PEER", "OPERATION", "TYPE"],
          byPeer.peers.flatMap((p) => p.operations.map((op) => [p.peer_id, op.name, op.op_type]))
        )
      }
      const output = yield* client.call("services/list", {})
      if (o.json) return yield* Io.json(output)
      const listing = yield* Schema.decodeUnknown(Listing)(output).pipe(
        Effect.mapError((e) => new CliError({ code: "Internal", message: `unexpected services/list output: ${e.message}` }))
      )
      yield* Io.table(["OPERATION", "TYPE"], listing.operations.map((op) => [op.name, op.op_type]))
    }).pipe(Effect.scoped)
).pipe(Command.withDescription("List the operations the node lets you call."))

const schema = Command.make(
  "schema",
  { address, operation, ...connection },
  (o) =>
    Effect.gen(function*() {
      const client = yield* connect(o.address, o)
      yield* Io.json(yield* client.call("services/schema", { name: o.operation }))
    }).pipe(Effect.scoped)
).pipe(Command.withDescription("Print an operation's spec: input/output JSON Schemas, errors, access control."))

export const commands = [call, subscribe, ls, schema] as const
