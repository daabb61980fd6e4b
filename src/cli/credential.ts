/**
 * `alknet credential put|get|delete|list|rotate PROVIDER`: secrets the node's handlers use (API tokens of other
 * services), encrypted by the home's vault and kept in its store. Values are read from stdin, never from arguments
 * (which other users can see); `get` prints a value only with `--reveal`.
 *
 * A home that keeps no mnemonic reads it from the first line of stdin; `put` then reads the value after it.
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Effect, Layer, Option, Redacted } from "effect"
import * as CredentialStore from "../services/CredentialStore.js"
import * as Vault from "../services/Vault.js"
import { CliError, usage } from "./errors.js"
import * as Home from "./home.js"
import * as Io from "./io.js"
import * as Shared from "./options.js"

const provider = Args.text({ name: "provider" }).pipe(Args.withDescription("the credential's name, e.g. github"))
const keyVersion = Options.integer("key-version").pipe(
  Options.withPseudoName("N"),
  Options.withDescription(`encrypt under this key version (default ${Vault.CURRENT_KEY_VERSION})`),
  Options.optional
)

/** A key version to encrypt to: version 1 is the legacy password-based scheme, which this vault only reads about. */
const encryptVersion = (flag: string, version: number) =>
  version === 1
    ? Effect.fail(usage(
      `${flag} 1: key version 1 is legacy (password-based) encryption, which this vault cannot encrypt to; ` +
        `use ${Vault.CURRENT_KEY_VERSION} or later`
    ))
    : Effect.succeed(version)

/** The store and the unlocked vault of a home. */
const withVault = <A, E>(
  home: string,
  f: (store: CredentialStore.Service, vault: Vault.Vault["Type"]) => Effect.Effect<A, E>
) =>
  Effect.flatMap(Effect.zip(CredentialStore.CredentialStore, Vault.Vault), ([store, vault]) => f(store, vault)).pipe(
    Effect.provide(Layer.merge(Home.stores(home), Home.vault(home)))
  )

const stored = (store: CredentialStore.Service, name: string) =>
  Effect.flatMap(store.get(name), (blob) =>
    Option.match(blob, {
      onNone: () => Effect.fail(new CliError({ code: "NotFound", message: `credential not found: ${name}` })),
      onSome: Effect.succeed
    }))

const put = Command.make(
  "put",
  { home: Shared.home, provider, keyVersion },
  (o) =>
    withVault(o.home, (store, vault) =>
      Effect.gen(function*() {
        const version = yield* encryptVersion("--key-version", Option.getOrElse(o.keyVersion, () => Vault.CURRENT_KEY_VERSION))
        const value = yield* Io.readRest(`the value of ${o.provider}`)
        const blob = yield* vault.encrypt(value, version)
        yield* store.put(o.provider, blob)
        yield* Io.out(`stored credential ${o.provider} (key_version ${blob.key_version})`)
      }))
).pipe(Command.withDescription("Encrypt the value read from stdin and store it under PROVIDER (replacing any)."))

const get = Command.make(
  "get",
  {
    home: Shared.home,
    provider,
    reveal: Options.boolean("reveal").pipe(Options.withDescription("print the decrypted value")),
    json: Shared.json
  },
  (o) =>
    withVault(o.home, (store, vault) =>
      Effect.gen(function*() {
        const blob = yield* stored(store, o.provider)
        // Decrypting checks the value is intact and this mnemonic's, even when it is not shown.
        const value = yield* vault.decrypt(blob)
        if (o.json) {
          return yield* Io.json({
            provider: o.provider,
            key_version: blob.key_version,
            ...(o.reveal ? { value: Redacted.value(value) } : {})
          })
        }
        if (o.reveal) return yield* Io.out(Redacted.value(value))
        yield* Io.out(`${o.provider}: key_version ${blob.key_version}, decrypts; value hidden (--reveal prints it)`)
      }))
).pipe(Command.withDescription("Check a credential decrypts; with --reveal, print its value."))

const remove = Command.make(
  "delete",
  { home: Shared.home, provider },
  (o) =>
    Home.withCredentialStore(o.home, (store) => store.delete(o.provider)).pipe(
      Effect.zipRight(Io.out(`deleted credential ${o.provider}`))
    )
).pipe(Command.withDescription("Delete a credential."))

const list = Command.make(
  "list",
  { home: Shared.home, json: Shared.json },
  (o) =>
    Home.withCredentialStore(o.home, (store) =>
      Effect.gen(function*() {
        const names = yield* store.list
        const rows = yield* Effect.forEach(names, (name) =>
          Effect.map(stored(store, name), (blob) => ({ provider: name, key_version: blob.key_version })))
        if (o.json) return yield* Io.json(rows)
        yield* Io.table(["PROVIDER", "KEY VERSION"], rows.map((r) => [r.provider, String(r.key_version)]))
      }))
).pipe(Command.withDescription("List stored credentials and their key versions (never values)."))

const rotate = Command.make(
  "rotate",
  {
    home: Shared.home,
    provider,
    to: Options.integer("to").pipe(
      Options.withPseudoName("N"),
      Options.withDescription("the key version to re-encrypt to (default: the next one)"),
      Options.optional
    )
  },
  (o) =>
    withVault(o.home, (store, vault) =>
      Effect.gen(function*() {
        const blob = yield* stored(store, o.provider)
        const target = yield* encryptVersion("--to", Option.getOrElse(o.to, () => blob.key_version + 1))
        const rotated = yield* vault.rotate(blob, target)
        yield* store.put(o.provider, rotated)
        yield* Io.out(`rotated credential ${o.provider}: key_version ${blob.key_version} -> ${rotated.key_version}`)
      }))
).pipe(Command.withDescription("Re-encrypt a credential under another key version (the old one stays derivable)."))

/** The subcommands, in the order help lists them. */
export const subcommands = [put, get, remove, list, rotate] as const

export const command = Command.make("credential").pipe(
  Command.withDescription("Manage the encrypted credentials of a home."),
  Command.withSubcommands(subcommands)
)
