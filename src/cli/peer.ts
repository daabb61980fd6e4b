/**
 * `alknet peer add|update|remove|list`: the peers of a home, in its SQLite store. A node running on the same home
 * picks every change up within milliseconds, without a restart.
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Effect, Either, Option, Schema } from "effect"
import { formatError } from "../schema/Config.js"
import { PeerEntry } from "../schema/PeerEntry.js"
import { CliError, usage } from "./errors.js"
import * as Home from "./home.js"
import * as Io from "./io.js"
import * as Outbound from "./outbound.js"
import * as Shared from "./options.js"

const id = Options.text("id").pipe(
  Options.withPseudoName("ID"),
  Options.withDescription("the peer's id (letters, digits, . _ -)")
)
const fingerprints = Options.text("fingerprint").pipe(
  Options.withPseudoName("FP"),
  Options.withDescription("a TLS key fingerprint of the peer, ed25519:<hex> (repeatable)"),
  Shared.repeatable
)
const scopes = Options.text("scope").pipe(
  Options.withPseudoName("SCOPE"),
  Options.withDescription("a scope granted to the peer (repeatable)"),
  Shared.repeatable
)
const resources = Options.text("resource").pipe(
  Options.withPseudoName("TYPE[=ACTION]"),
  Options.withDescription("a resource granted to the peer, TYPE=ACTION or TYPE (repeatable)"),
  Shared.repeatable
)
const displayName = Options.text("display-name").pipe(
  Options.withPseudoName("NAME"),
  Options.withDescription("a name for people"),
  Options.optional
)
const disabled = Options.boolean("disabled").pipe(Options.withDescription("the peer resolves to nothing until enabled"))
const enabled = Options.boolean("enabled").pipe(Options.withDescription("enable a disabled peer"))

/** `fs=read`, `fs=write`, `logs` → `{ fs: ["read", "write"], logs: [] }`. */
const parseResources = (specs: ReadonlyArray<string>) =>
  Effect.suspend(() => {
    const out: Record<string, Array<string>> = {}
    for (const spec of specs) {
      const match = /^([^=\s]+)(?:=([^=\s]+))?$/.exec(spec)
      if (match === null) return Effect.fail(usage(`--resource: expected TYPE=ACTION or TYPE, got ${JSON.stringify(spec)}`))
      const actions = (out[match[1]!] ??= [])
      if (match[2] !== undefined && !actions.includes(match[2])) actions.push(match[2])
    }
    return Effect.succeed(out)
  })

const decodePeer = Schema.decodeUnknownEither(PeerEntry, { errors: "all", onExcessProperty: "error" })

/** Check an entry built from flags: a bad id or fingerprint is a usage error naming the flag's field. */
const checked = (entry: typeof PeerEntry.Encoded) =>
  Either.match(decodePeer(entry), {
    onLeft: (e) => Effect.fail(usage(`invalid peer: ${formatError(e)}`)),
    onRight: Effect.succeed
  })

const summary = (peer: PeerEntry) =>
  [
    `${peer.fingerprints.length} fingerprint${peer.fingerprints.length === 1 ? "" : "s"}`,
    `scopes: ${peer.scopes.length === 0 ? "none" : peer.scopes.join(", ")}`,
    ...(Object.keys(peer.resources).length === 0 ? [] : [`resources: ${formatResources(peer.resources)}`]),
    ...(peer.enabled ? [] : ["disabled"])
  ].join("; ")

const formatResources = (resources: PeerEntry["resources"]) =>
  Object.entries(resources)
    .map(([type, actions]) => (actions.length === 0 ? type : actions.map((a) => `${type}=${a}`).join(",")))
    .join(",")

const add = Command.make(
  "add",
  { home: Shared.home, id, fingerprints, scopes, resources, displayName, disabled },
  (o) =>
    Effect.gen(function*() {
      const peer = yield* checked({
        peer_id: o.id,
        fingerprints: o.fingerprints,
        scopes: o.scopes,
        resources: yield* parseResources(o.resources),
        enabled: !o.disabled,
        ...(Option.isSome(o.displayName) ? { display_name: o.displayName.value } : {})
      })
      yield* Home.withIdentityStore(o.home, (store) =>
        Effect.gen(function*() {
          if (Option.isSome(yield* store.getPeer(peer.peer_id))) {
            return yield* new CliError({
              code: "Exists",
              message: `peer ${peer.peer_id} already exists; change it with: alknet peer update --id ${peer.peer_id}`
            })
          }
          yield* store.putPeer(peer)
        }))
      yield* Io.out(`added peer ${peer.peer_id} (${summary(peer)})`)
    })
).pipe(Command.withDescription("Add a peer: fingerprints and a token resolve to its id, scopes and resources."))

const update = Command.make(
  "update",
  { home: Shared.home, id, fingerprints, scopes, resources, displayName, disabled, enabled },
  (o) =>
    Effect.gen(function*() {
      if (o.disabled && o.enabled) return yield* usage("--disabled and --enabled contradict each other")
      const granted = yield* parseResources(o.resources)
      const peer = yield* Home.withIdentityStore(o.home, (store) =>
        Effect.gen(function*() {
          const current = yield* store.getPeer(o.id)
          if (Option.isNone(current)) {
            return yield* new CliError({ code: "NotFound", message: `peer not found: ${o.id}` })
          }
          const old = current.value
          const next = yield* checked({
            ...Schema.encodeSync(PeerEntry)(old),
            ...(o.fingerprints.length > 0 ? { fingerprints: o.fingerprints } : {}),
            ...(o.scopes.length > 0 ? { scopes: o.scopes } : {}),
            ...(o.resources.length > 0 ? { resources: granted } : {}),
            ...(Option.isSome(o.displayName) ? { display_name: o.displayName.value } : {}),
            enabled: o.disabled ? false : o.enabled ? true : old.enabled
          })
          yield* store.updatePeer(next)
          return next
        }))
      yield* Io.out(`updated peer ${peer.peer_id} (${summary(peer)})`)
    })
).pipe(Command.withDescription("Change a peer: each list given (--fingerprint, --scope, --resource) replaces the old one."))

const remove = Command.make(
  "remove",
  { home: Shared.home, id },
  (o) =>
    Home.withIdentityStore(o.home, (store) => store.removePeer(o.id)).pipe(Effect.zipRight(Io.out(`removed peer ${o.id}`)))
).pipe(Command.withDescription("Remove a peer: its fingerprints and token resolve to nothing from now on."))

const list = Command.make(
  "list",
  { home: Shared.home, json: Shared.json },
  (o) =>
    Effect.gen(function*() {
      const peers = yield* Home.withIdentityStore(o.home, (store) => store.listPeers)
      if (o.json) return yield* Io.json(peers.map((p) => Schema.encodeSync(PeerEntry)(p)))
      yield* Io.table(
        ["ID", "ENABLED", "SCOPES", "RESOURCES", "TOKEN", "NAME", "FINGERPRINTS"],
        peers.map((p) => [
          p.peer_id,
          p.enabled ? "yes" : "no",
          p.scopes.join(",") || "-",
          formatResources(p.resources) || "-",
          p.auth_token_hash === undefined ? "-" : "yes",
          p.display_name ?? "-",
          p.fingerprints.join(",") || "-"
        ])
      )
    })
).pipe(Command.withDescription("List the peers of a home."))

/** The subcommands, in the order help lists them. */
export const subcommands = [add, update, remove, list, ...Outbound.commands] as const

export const command = Command.make("peer").pipe(
  Command.withDescription(
    "Manage the peers of a home, and the peers its node connects to (a running node picks changes up at once)."
  ),
  Command.withSubcommands(subcommands)
)
