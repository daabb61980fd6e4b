/**
 * `alknet init`: create a node's home, print its fingerprint and (once) the generated mnemonic.
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Effect, Either, Option, Redacted, Schema } from "effect"
import * as path from "node:path"
import * as NodeHome from "../layers/NodeHome.js"
import { formatError, StoreConfig } from "../schema/Config.js"
import * as Vault from "../services/Vault.js"
import { CliError } from "./errors.js"
import * as Io from "./io.js"
import * as Shared from "./options.js"

export interface InitOptions {
  readonly home: string
  readonly words: Vault.WordCount
  readonly mnemonicStdin: boolean
  readonly storeMnemonic: boolean
  /** A PostgreSQL URL: keep peers, API keys and credentials there instead of the home's SQLite file. */
  readonly store?: string
}

/** `--store URL` as the config's `store`, or a usage error naming what is wrong with it. */
const storeOf = (url: string | undefined) =>
  url === undefined ? Effect.succeed(undefined) : Either.match(
    Schema.decodeUnknownEither(StoreConfig)({ type: "postgres", url }, { errors: "all" }),
    {
      onLeft: (e) =>
        Effect.fail(new CliError({ code: "Usage", message: `--store: ${formatError(e).replace(/^url: /, "")}` })),
      onRight: (store) => Effect.succeed(store)
    }
  )

/**
 * Create the home and report it through `print` (stdout for `init`, stderr when `node --init` does it, so the node's
 * first stdout line stays the listening line). With `json`, one JSON object instead.
 */
export const initHome = (options: InitOptions, print: (line: string) => Effect.Effect<void>, json = false) =>
  Effect.gen(function*() {
    const home = path.resolve(options.home)
    const store = yield* storeOf(options.store)
    const mnemonic = options.mnemonicStdin
      ? Option.some(yield* Io.readLine("a mnemonic", "enter the mnemonic (one line)", "BadMnemonic"))
      : Option.none()
    const created = yield* NodeHome.init({
      home,
      words: options.words,
      storeMnemonic: options.storeMnemonic,
      ...(store === undefined ? {} : { store }),
      ...(Option.isSome(mnemonic) ? { mnemonic: mnemonic.value } : {})
    }).pipe(Effect.provide(Vault.layer))
    if (json) {
      return yield* print(JSON.stringify({
        home,
        fingerprint: created.fingerprint,
        mnemonic_stored: options.storeMnemonic,
        ...(created.generated === undefined ? {} : { mnemonic: Redacted.value(created.generated) })
      }))
    }
    yield* print(`created alknet home ${home}`)
    yield* print(`fingerprint ${created.fingerprint}`)
    if (created.generated !== undefined) {
      const words = Redacted.value(created.generated)
      yield* print("")
      yield* print(`mnemonic (${words.split(" ").length} words), shown only this once:`)
      yield* print("")
      yield* print(`    ${words}`)
      yield* print("")
      yield* print("  Back it up now, offline. It is this node's identity and the key to its stored credentials:")
      yield* print("  whoever has it can act as this node, and without it neither can be recovered.")
    }
    yield* print(
      options.storeMnemonic
        ? `  The mnemonic is stored in ${NodeHome.mnemonicPath(home)} (mode 0600).`
        : "  The mnemonic is not stored: give it on stdin whenever this home's vault is needed (node, credential)."
    )
  })

const words = Options.choice("words", ["12", "15", "18", "21", "24"]).pipe(
  Options.withDefault("24"),
  Options.withDescription("words of the generated mnemonic")
)
const mnemonicStdin = Options.boolean("mnemonic-stdin").pipe(
  Options.withDescription("read an existing mnemonic from stdin instead of generating one")
)
const noStoreMnemonic = Options.boolean("no-store-mnemonic").pipe(
  Options.withDescription("do not keep the mnemonic in the home (it is then read from stdin when needed)")
)

const store = Options.text("store").pipe(
  Options.withDescription(
    "keep peers, API keys and credentials in this PostgreSQL database (postgres://USER@HOST:PORT/DB, shared by " +
      "several nodes; the password from PGPASSWORD or ~/.pgpass) instead of the home's SQLite file"
  ),
  Options.optional
)

export const command = Command.make(
  "init",
  { home: Shared.home, words, mnemonicStdin, noStoreMnemonic, store, json: Shared.json },
  (o) =>
    initHome({
      home: o.home,
      words: Number(o.words) as Vault.WordCount,
      mnemonicStdin: o.mnemonicStdin,
      storeMnemonic: !o.noStoreMnemonic,
      ...(Option.isSome(o.store) ? { store: o.store.value } : {})
    }, Io.out, o.json)
).pipe(
  Command.withDescription("Create a node's home: config, store (SQLite, or --store PostgreSQL), and a new (or given) mnemonic.")
)
