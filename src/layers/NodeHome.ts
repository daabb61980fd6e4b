/**
 * A node's home directory: everything a node needs on disk, in one folder.
 *
 * ```
 * HOME/
 *   config.json        static + dynamic config (SPEC §11), watched while the node runs
 *   mnemonic           the BIP39 mnemonic, mode 0600 (absent with `--no-store-mnemonic`)
 *   data/alknet.db     SQLite: peers, API keys, credentials (the config's `data_dir`), unless the config's
 *                      `store` names a PostgreSQL database
 * ```
 *
 * `init` creates a home and refuses to touch an existing one.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Data, Effect, Layer, Redacted } from "effect"
import type { StoreConfig } from "../schema/Config.js"
import * as Vault from "../services/Vault.js"
import type * as Stores from "./Stores.js"

export const CONFIG_FILE = "config.json"
export const MNEMONIC_FILE = "mnemonic"
export const DATABASE_FILE = "alknet.db"
/** The default home: `./.alknet`. */
export const DEFAULT_HOME = ".alknet"

export const configPath = (home: string) => path.join(home, CONFIG_FILE)
export const mnemonicPath = (home: string) => path.join(home, MNEMONIC_FILE)
export const databasePath = (dataDir: string) => path.join(dataDir, DATABASE_FILE)

/** A home that cannot be created or used. */
export class HomeError extends Data.TaggedError("HomeError")<{
  readonly reason: "Exists" | "Missing" | "Io"
  readonly message: string
}> {}

const io = (what: string) => (cause: unknown) =>
  new HomeError({ reason: "Io", message: `${what}: ${(cause as NodeJS.ErrnoException).code ?? String(cause)}` })

const exists = (p: string) =>
  Effect.promise(() => fs.access(p).then(() => true, () => false))

/** Fail with `Missing` unless `home` holds a config file. */
export const requireHome = (home: string): Effect.Effect<void, HomeError> =>
  Effect.flatMap(exists(configPath(home)), (found) =>
    found
      ? Effect.void
      : Effect.fail(
        new HomeError({
          reason: "Missing",
          message: `no alknet home at ${path.resolve(home)} (no ${CONFIG_FILE}); create one with: alknet init --home ${home}`
        })
      ))

export interface InitOptions {
  readonly home: string
  /** Words of a generated mnemonic (default 24). */
  readonly words?: Vault.WordCount
  /** Use this mnemonic instead of generating one. */
  readonly mnemonic?: Redacted.Redacted<string>
  /** Keep the mnemonic in `HOME/mnemonic` (mode 0600); default true. */
  readonly storeMnemonic?: boolean
  /** Initial config (default `{}`: every default). */
  readonly config?: Record<string, unknown>
  /** Keep peers, API keys and credentials here instead of SQLite (written to the config as `store`). */
  readonly store?: StoreConfig
}

export interface Initialized {
  /** The node's TLS fingerprint (its identity key, `m/74'/0'/0'/0'`). */
  readonly fingerprint: string
  /** The generated mnemonic, to show once; none when one was given. */
  readonly generated: Redacted.Redacted<string> | undefined
}

/**
 * Create a home: config file, SQLite store (migrated), and the mnemonic file. A mnemonic that does not check out is
 * a `VaultError` and nothing is written. An existing home is never overwritten.
 */
export const init = (options: InitOptions) =>
  Effect.gen(function*() {
    const home = path.resolve(options.home)
    if (yield* exists(configPath(home))) {
      return yield* new HomeError({ reason: "Exists", message: `${home} is already an alknet home; refusing to overwrite it` })
    }
    const vault = yield* Vault.Vault
    let generated: Redacted.Redacted<string> | undefined
    if (options.mnemonic === undefined) {
      generated = yield* vault.unlockNew(options.words ?? 24)
    } else {
      yield* vault.unlock(options.mnemonic)
    }
    const key = yield* Vault.nodeIdentity
    // Loaded here, not with the module: the CLI reads paths from this module on every command.
    const Tls = yield* Effect.promise(() => import("../services/Tls.js"))
    const fingerprint = Tls.ed25519Fingerprint(key.publicKey)
    const mnemonic = generated ?? options.mnemonic!

    yield* Effect.tryPromise({ try: () => fs.mkdir(path.join(home, "data"), { recursive: true, mode: 0o700 }), catch: io(`cannot create ${home}`) })
    // The store is created (and migrated) now, so a fresh home is complete before the node first runs
    // (and before the mnemonic file: a store that cannot be reached leaves nothing to clean up before a retry).
    const store = options.store ?? { type: "sqlite" as const }
    const StoresModule: typeof Stores = yield* Effect.promise(() => import("./Stores.js"))
    yield* Effect.scoped(Layer.build(StoresModule.layer({ data_dir: path.join(home, "data"), store })))
    if (options.storeMnemonic ?? true) {
      yield* Effect.tryPromise({
        try: () => fs.writeFile(mnemonicPath(home), `${Redacted.value(mnemonic).trim()}\n`, { mode: 0o600, flag: "wx" }),
        catch: io(`cannot write ${mnemonicPath(home)}`)
      })
    }
    const config = options.store === undefined ? options.config ?? {} : { ...options.config, store: options.store }
    // The config file is written last: its presence is what makes the directory a home.
    yield* Effect.tryPromise({
      try: () => fs.writeFile(configPath(home), `${JSON.stringify(config, null, 2)}\n`, { flag: "wx" }),
      catch: io(`cannot write ${configPath(home)}`)
    })
    return { fingerprint, generated } satisfies Initialized
  })
