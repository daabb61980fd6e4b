/**
 * Talking to a node: `alknet call`, `subscribe`, `ls`, `schema`.
 *
 * The client presents the identity of `--home` (its node key) or an ephemeral one, sends the bearer token
 * (`$ALKNET_TOKEN`, `--token-file`, or `--token` with a warning) as `auth_token` after checking the node accepts it,
 * and pins `--fingerprint`. A raw-key node can only be reached with its fingerprint
 * pinned: without one the connection fails closed (SPEC §3). Connecting retries `--retries` times when nothing
 * answers, with progress on stderr.
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Config, Effect, Option, Redacted, Schema, Stream } from "effect"
import * as fs from "node:fs/promises"
import { CallError } from "../errors/CallError.js"
import { compact } from "../internal/compact.js"
import { CliError, usage } from "./errors.js"
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
    Options.withDescription(
      "bearer token sent with every call; visible to other users in the process list: prefer $ALKNET_TOKEN or --token-file"
    ),
    Options.optional
  ),
  tokenFile: Options.text("token-file").pipe(
    Options.withPseudoName("PATH"),
    Options.withDescription("read the bearer token from this file (its first line); - reads it from stdin"),
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

interface ConnectionFlags {
  readonly address: string
  readonly home: Option.Option<string>
  readonly fingerprint: Option.Option<string>
  readonly token: Option.Option<Redacted.Redacted<string>>
  readonly tokenFile: Option.Option<string>
  readonly connectTimeout: string
  readonly retries: number
}

/**
 * The bearer token: `--token` (with a warning: the process list shows it), `--token-file PATH` (`-`: the first line
 * of stdin), else `$ALKNET_TOKEN`.
 */
const resolveToken = (o: ConnectionFlags) =>
  Effect.gen(function*() {
    if (Option.isSome(o.token) && Option.isSome(o.tokenFile)) return yield* usage("--token and --token-file: give one")
    if (Option.isSome(o.token)) {
      yield* Io.err(
        "alknet: warning: a token given with --token is visible to other users in the process list; " +
          "use $ALKNET_TOKEN or --token-file instead"
      )
      return o.token
    }
    if (Option.isSome(o.tokenFile)) {
      const file = o.tokenFile.value
      const text = file === "-"
        ? Redacted.value(yield* Io.readLine("the token", "enter the token (one line)"))
        : yield* Effect.tryPromise({
          try: () => fs.readFile(file, "utf8"),
          catch: (e) =>
            usage(`--token-file: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`)
        })
      const token = text.split(/\r?\n/)[0]!.trim()
      if (token === "") return yield* usage(`--token-file: no token in ${file === "-" ? "stdin" : file}`)
      return Option.some(Redacted.make(token))
    }
    return yield* Config.option(Config.redacted("ALKNET_TOKEN")).pipe(
      Effect.catchAll(() => Effect.succeedNone)
    )
  })

const WhoAmI = Schema.Struct({ identity: Schema.NullOr(Schema.Unknown) })

/** `FORBIDDEN: the token was rejected by the node` (never the token itself). */
const tokenRejected = (detail = "") =>
  new CallError({ code: "FORBIDDEN", message: `the token was rejected by the node${detail}`, retryable: false })

/**
 * Connect with the command's credentials. With a token, first ask the node who it takes us for (`node/whoami`): a
 * node that does not know the token answers as to an anonymous caller, which would otherwise go unnoticed.
 */
const open = (o: ConnectionFlags, resolved?: Option.Option<Redacted.Redacted<string>>) =>
  Effect.gen(function*() {
    const token = resolved ?? (yield* resolveToken(o))
    const client = yield* Effect.flatMap(
      Effect.promise(() => import("./client.js")),
      (client) => client.connect(o.address, { ...o, token })
    )
    if (Option.isSome(token)) {
      const answer = yield* client.call("node/whoami", {}).pipe(
        Effect.map(Schema.decodeUnknownOption(WhoAmI)),
        // A node without node/whoami (not an alknet node): nothing to check against.
        Effect.catchIf((e) => e.code === "NOT_FOUND", () => Effect.succeedNone)
      )
      if (Option.isSome(answer) && answer.value.identity === null) return yield* tokenRejected()
    }
    /** A call's failure, said plainly when it is because the token was not accepted. */
    const explain = <A, E, R>(self: Effect.Effect<A, E, R>) =>
      Option.isNone(token)
        ? self
        : Effect.catchIf(
          self,
          (e): e is E & CallError => e instanceof CallError && e.code === "FORBIDDEN" && e.message === "authentication required",
          () => Effect.fail(tokenRejected(" (authentication required)"))
        )
    return { client, explain }
  })

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
      // The token first: with `--token-file -` it is the first line of stdin, and a `-` input the rest.
      const token = yield* resolveToken(o)
      const value = yield* parseInput(o.input)
      const deadline = Option.isSome(o.timeout) ? yield* Shared.parseDuration("--timeout", o.timeout.value) : undefined
      const { client, explain } = yield* open(o, token)
      yield* Io.json(yield* explain(client.call(o.operation, value, compact({ timeout: deadline }))))
    }).pipe(Effect.scoped)
).pipe(Command.withDescription("Call an operation and print its output as JSON."))

const subscribe = Command.make(
  "subscribe",
  { address, operation, input, ...connection },
  (o) =>
    Effect.gen(function*() {
      const token = yield* resolveToken(o)
      const value = yield* parseInput(o.input)
      const { client, explain } = yield* open(o, token)
      // Only a subscription streams: a query or mutation would answer once and leave the stream waiting.
      const spec = yield* explain(client.call("services/schema", { name: o.operation }))
      const opType = Option.getOrUndefined(Schema.decodeUnknownOption(OpType)(spec))?.op_type
      if (opType !== undefined && opType !== "subscription") {
        return yield* new CallError({
          code: "INVALID_OPERATION_TYPE",
          message: `${o.operation} is a ${opType}; use alknet call`,
          retryable: false
        })
      }
      yield* explain(Stream.runForEach(client.subscribe(o.operation, value), (item) => Io.json(item, true)))
    }).pipe(Effect.scoped)
).pipe(Command.withDescription("Subscribe and print one JSON line per item; Ctrl-C aborts the subscription."))

const OpType = Schema.Struct({ op_type: Schema.String })

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
      const { client, explain } = yield* open(o)
      if (o.peers) {
        const listed = yield* explain(client.call("services/list-peers", {})).pipe(
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
      const output = yield* explain(client.call("services/list", {}))
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
      const { client, explain } = yield* open(o)
      yield* Io.json(yield* explain(client.call("services/schema", { name: o.operation })))
    }).pipe(Effect.scoped)
).pipe(Command.withDescription("Print an operation's spec: input/output JSON Schemas, errors, access control."))

const openapi = Command.make(
  "openapi",
  { address, ...connection },
  (o) =>
    Effect.gen(function*() {
      const { client } = yield* open(o)
      const [FromCall, ToOpenApi, OperationRegistry] = yield* Effect.promise(() =>
        Promise.all([import("../peer/FromCall.js"), import("../peer/ToOpenApi.js"), import("../services/OperationRegistry.js")])
      )
      // What the node lets us call, as its gateway would describe it to us.
      const imported = yield* FromCall.fromCall(client, { visibility: "external", label: o.address }).import().pipe(
        Effect.mapError((e) => new CliError({ code: e.reason === "Unauthorized" ? "CallForbidden" : "Internal", message: e.message }))
      )
      const url = /^wss?:\/\/[^/]+/.exec(o.address)?.[0].replace(/^ws/, "http")
      yield* Io.json(ToOpenApi.document(OperationRegistry.sourceOf(imported), {
        all: true,
        title: `alknet node ${o.address}`,
        ...(url === undefined ? {} : { serverUrl: url })
      }))
    }).pipe(Effect.scoped)
).pipe(
  Command.withDescription(
    "Print the OpenAPI 3.1 document of what the node lets you call (as its HTTP gateway serves it at /openapi.json)."
  )
)

export const commands = [call, subscribe, ls, schema, openapi] as const
