/**
 * Outbound peers from the command line: `alknet node --connect [ID=]ADDR#FINGERPRINT` (for the node's life) and
 * `alknet peer connect|disconnect --home DIR [ID=]ADDR#FINGERPRINT …`, which edit the config file's `outbound` list
 * (a running node picks the change up at once). Entries written here export the peer's operations (`export_as:
 * "external"`): callers of the node reach them by plain name (any peer serving it) or `ID/ns/op` (that peer).
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Effect, Either, Option, Schema } from "effect"
import * as fs from "node:fs/promises"
import * as NodeHome from "../layers/NodeHome.js"
import { formatError, OutboundPeer, outboundId } from "../schema/Config.js"
import { CliError, usage } from "./errors.js"
import * as Io from "./io.js"
import * as Shared from "./options.js"

const decodeOutbound = Schema.decodeUnknownEither(OutboundPeer, { errors: "all", onExcessProperty: "error" })

/**
 * `[ID=]ADDR#FINGERPRINT` as an exported entry. The fingerprint is required: an alknet node presents its own key, which
 * no CA vouches for, so a link without a pin would fail closed on every attempt (retrying forever). A peer with a
 * CA-signed certificate can be linked without one in the config file's `outbound` list. `pinned: false` accepts a
 * bare `ADDR` too (to name an entry, e.g. for `disconnect`).
 */
export const parseTarget = (flag: string, text: string, pinned = true): Effect.Effect<OutboundPeer, CliError> => {
  const match = /^(?:([A-Za-z0-9._-]+)=)?([^#\s]+)(?:#(\S+))?$/.exec(text)
  if (match === null) return Effect.fail(usage(`${flag}: expected [ID=]ADDR#FINGERPRINT, got ${JSON.stringify(text)}`))
  if (pinned && match[3] === undefined) {
    return Effect.fail(usage(
      `${flag} ${text}: no fingerprint: give the peer as ${text}#FINGERPRINT (its node prints it on its first line); ` +
        "an alknet node's key is trusted only when pinned"
    ))
  }
  const entry = {
    ...(match[1] === undefined ? {} : { peer_id: match[1] }),
    address: match[2]!,
    ...(match[3] === undefined ? {} : { fingerprint: match[3] }),
    export_as: "external"
  }
  return Either.match(decodeOutbound(entry), {
    onLeft: (e) => Effect.fail(usage(`${flag} ${text}: ${formatError(e)}`)),
    onRight: Effect.succeed
  })
}

const targets = Args.text({ name: "peer" }).pipe(
  Args.withDescription("[ID=]ADDR#FINGERPRINT, e.g. w1=quic://127.0.0.1:4501#ed25519:…"),
  Args.atLeast(1)
)

/** Rewrite the home's config file with `outbound` changed by `f` (the rest of the file is kept as it is). */
const editOutbound = (
  home: string,
  f: (current: ReadonlyArray<unknown>) => ReadonlyArray<unknown>
) =>
  Effect.gen(function*() {
    const file = NodeHome.configPath(home)
    const text = yield* Effect.tryPromise({
      try: () => fs.readFile(file, "utf8"),
      catch: () => new CliError({ code: "NotFound", message: `cannot read ${file}: is ${home} a home?` })
    })
    let json: Record<string, unknown>
    try {
      json = JSON.parse(text) as Record<string, unknown>
    } catch (e) {
      return yield* new CliError({ code: "Internal", message: `${file} is not valid JSON: ${String(e)}` })
    }
    const current = Array.isArray(json.outbound) ? (json.outbound as ReadonlyArray<unknown>) : []
    const next = { ...json, outbound: f(current) }
    // Write to a temp file and rename: the node never reads half a file.
    const temp = `${file}.${process.pid}.tmp`
    yield* Effect.tryPromise({
      try: () => fs.writeFile(temp, `${JSON.stringify(next, null, 2)}\n`).then(() => fs.rename(temp, file)),
      catch: (e) => new CliError({ code: "Internal", message: `cannot write ${file}: ${String(e)}` })
    })
  })

const idOf = (entry: unknown) => {
  const decoded = decodeOutbound(entry)
  return Either.isRight(decoded) ? outboundId(decoded.right) : undefined
}

const tokenCredential = Options.text("token-credential").pipe(
  Options.withPseudoName("PROVIDER"),
  Options.withDescription("send the credential PROVIDER (alknet credential put) as the bearer token"),
  Options.optional
)
const internal = Options.boolean("internal").pipe(
  Options.withDescription("import for this node's handlers only: do not export to the node's callers")
)

const connect = Command.make(
  "connect",
  { home: Shared.home, targets, tokenCredential, internal },
  (o) =>
    Effect.gen(function*() {
      const parsed = yield* Effect.forEach(o.targets, (t) => parseTarget("peer", t))
      const entries = parsed.map((e): OutboundPeer => ({
        ...e,
        ...(Option.isSome(o.tokenCredential) ? { token_credential: o.tokenCredential.value } : {}),
        export_as: o.internal ? "internal" : "external"
      }))
      const ids = new Set(entries.map(outboundId))
      yield* editOutbound(o.home, (current) => [
        ...current.filter((e) => !ids.has(idOf(e) ?? "")),
        ...entries.map((e) => Schema.encodeSync(OutboundPeer)(e))
      ])
      for (const entry of entries) yield* Io.out(`connect ${outboundId(entry)} ${entry.address} (${entry.export_as})`)
    })
).pipe(Command.withDescription("Add outbound peers to the config: the node connects, imports and exports their operations."))

const disconnect = Command.make(
  "disconnect",
  { home: Shared.home, targets },
  (o) =>
    Effect.gen(function*() {
      const ids = new Set<string>()
      for (const t of o.targets) {
        // An id alone, or the same ADDR#FINGERPRINT given to connect.
        ids.add(/^[A-Za-z0-9._-]+$/.test(t) ? t : outboundId(yield* parseTarget("peer", t, false)))
      }
      let removed = 0
      yield* editOutbound(o.home, (current) => {
        const kept = current.filter((e) => !ids.has(idOf(e) ?? ""))
        removed = current.length - kept.length
        return kept
      })
      if (removed === 0) return yield* new CliError({ code: "NotFound", message: `no outbound peer ${[...ids].join(", ")}` })
      yield* Io.out(`disconnected ${[...ids].join(", ")}`)
    })
).pipe(Command.withDescription("Remove outbound peers (by ID or ADDR#FINGERPRINT) from the config: the node drops the links."))

export const commands = [connect, disconnect] as const

/** `--connect` on `alknet node` (repeatable). */
export const connectOption = Options.text("connect").pipe(
  Options.withPseudoName("[ID=]ADDR#FP"),
  Options.withDescription("connect to a peer for this run and export its operations: [ID=]ADDR#FINGERPRINT (repeatable)"),
  Shared.repeatable
)
