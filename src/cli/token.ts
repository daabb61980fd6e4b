/**
 * `alknet token create|list|revoke`: bearer tokens of a home. An API key is a token that is its own identity (its
 * prefix is the id; it has scopes and may expire); a peer token (`--peer ID`) resolves to that peer. Only hashes are
 * stored; a new token is printed once, alone on stdout, so `TOKEN=$(alknet token create …)` works.
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Clock, DateTime, Duration, Effect, Option, Redacted } from "effect"
import * as IdentityStore from "../services/IdentityStore.js"
import { CliError, usage } from "./errors.js"
import * as Home from "./home.js"
import * as Io from "./io.js"
import * as Shared from "./options.js"

const scopes = Options.text("scope").pipe(
  Options.withPseudoName("SCOPE"),
  Options.withDescription("a scope the token grants (repeatable)"),
  Shared.repeatable
)
const expires = Options.text("expires").pipe(
  Options.withPseudoName("WHEN"),
  Options.withDescription("when it stops working: a duration from now (30d, 12h) or an ISO date (2030-01-01)"),
  Options.optional
)
const description = Options.text("description").pipe(
  Options.withPseudoName("TEXT"),
  Options.withDescription("what it is for"),
  Options.optional
)
const peer = Options.text("peer").pipe(
  Options.withPseudoName("ID"),
  Options.withDescription("a token for this peer (replaces its previous token): it resolves to the peer's identity"),
  Options.optional
)

/** `30d` (from now) or an ISO date; a moment already past is refused. */
const parseExpiry = (text: string) =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const at = /^\d+(?:\.\d+)?(?:ms|s|m|h|d|w)$/.test(text)
      ? DateTime.unsafeMake(now + Duration.toMillis(yield* Shared.parseDuration("--expires", text)))
      : yield* Option.match(DateTime.make(text), {
        onNone: () => Effect.fail(usage(`--expires: expected a duration (30d) or an ISO date, got ${JSON.stringify(text)}`)),
        onSome: Effect.succeed
      })
    if (DateTime.toEpochMillis(at) <= now) return yield* usage(`--expires: ${DateTime.formatIso(at)} is already past`)
    return DateTime.toUtc(at)
  })

const create = Command.make(
  "create",
  { home: Shared.home, scopes, expires, description, peer, json: Shared.json },
  (o) =>
    Effect.gen(function*() {
      if (Option.isSome(o.peer)) {
        if (o.scopes.length > 0 || Option.isSome(o.expires) || Option.isSome(o.description)) {
          return yield* usage("--scope, --expires and --description are for API keys; a peer token grants the peer's own scopes")
        }
        const peerId = o.peer.value
        const token = yield* Home.withIdentityStore(o.home, () => IdentityStore.issuePeerToken(peerId))
        if (o.json) return yield* Io.json({ token: Redacted.value(token), peer: peerId })
        yield* Io.out(Redacted.value(token))
        return yield* Io.err(`token for peer ${peerId} created (any previous one stops working); it is shown only this once`)
      }
      const expiresAt = Option.isSome(o.expires) ? yield* parseExpiry(o.expires.value) : undefined
      const created = yield* Home.withIdentityStore(o.home, (store) =>
        store.createApiKey({
          scopes: o.scopes,
          ...(Option.isSome(o.description) ? { description: o.description.value } : {}),
          ...(expiresAt === undefined ? {} : { expires_at: expiresAt })
        }))
      const { entry } = created
      const expiry = entry.expires_at === undefined ? undefined : DateTime.formatIso(entry.expires_at)
      if (o.json) {
        return yield* Io.json({
          token: Redacted.value(created.token),
          prefix: entry.prefix,
          scopes: entry.scopes,
          description: entry.description,
          ...(expiry === undefined ? {} : { expires_at: expiry })
        })
      }
      yield* Io.out(Redacted.value(created.token))
      yield* Io.err(
        `API key ${entry.prefix} created (scopes: ${entry.scopes.join(", ") || "none"}; ${
          expiry === undefined ? "never expires" : `expires ${expiry}`
        }); the token is shown only this once`
      )
    })
).pipe(Command.withDescription("Create a token and print it, once."))

const list = Command.make(
  "list",
  { home: Shared.home, json: Shared.json },
  (o) =>
    Effect.gen(function*() {
      const [keys, peers] = yield* Home.withIdentityStore(o.home, (store) => Effect.all([store.listApiKeys, store.listPeers]))
      const rows = [
        ...keys.map((k) => ({
          kind: "api-key" as const,
          id: k.prefix,
          scopes: k.scopes,
          description: k.description,
          expires_at: k.expires_at === undefined ? null : DateTime.formatIso(k.expires_at)
        })),
        ...peers.filter((p) => p.auth_token_hash !== undefined).map((p) => ({
          kind: "peer" as const,
          id: p.peer_id,
          scopes: p.scopes,
          description: p.display_name ?? "",
          expires_at: null
        }))
      ]
      if (o.json) return yield* Io.json(rows)
      yield* Io.table(
        ["KIND", "ID", "SCOPES", "EXPIRES", "DESCRIPTION"],
        rows.map((r) => [r.kind, r.id, r.scopes.join(",") || "-", r.expires_at ?? "never", r.description || "-"])
      )
    })
).pipe(Command.withDescription("List API keys (by prefix) and peers that have a token; never the tokens."))

const prefix = Args.text({ name: "prefix" }).pipe(Args.withDescription("the API key's prefix (alk_XXXX)"), Args.optional)

const revoke = Command.make(
  "revoke",
  { home: Shared.home, prefix, peer },
  (o) =>
    Effect.gen(function*() {
      if (Option.isSome(o.prefix) === Option.isSome(o.peer)) {
        return yield* usage("revoke takes an API key prefix or --peer ID (one of them)")
      }
      if (Option.isSome(o.prefix)) {
        const key = o.prefix.value
        yield* Home.withIdentityStore(o.home, (store) => store.removeApiKey(key))
        return yield* Io.out(`revoked API key ${key}`)
      }
      const peerId = Option.getOrThrow(o.peer)
      yield* Home.withIdentityStore(o.home, (store) =>
        Effect.gen(function*() {
          const found = yield* store.getPeer(peerId)
          if (Option.isNone(found) || found.value.auth_token_hash === undefined) {
            return yield* new CliError({ code: "NotFound", message: `peer ${peerId} has no token` })
          }
          const { auth_token_hash: _, ...rest } = found.value
          yield* store.updatePeer(rest)
        }))
      yield* Io.out(`revoked the token of peer ${peerId}`)
    })
).pipe(Command.withDescription("Revoke an API key, or a peer's token; it stops working at once."))

/** The subcommands, in the order help lists them. */
export const subcommands = [create, list, revoke] as const

export const command = Command.make("token").pipe(
  Command.withDescription("Manage the bearer tokens of a home."),
  Command.withSubcommands(subcommands)
)
