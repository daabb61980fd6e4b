/**
 * Encrypted credentials keyed by provider name (SPEC §13): `get` is served from memory, `put` / `delete` persist.
 * The store only ever holds {@link EncryptedData} — it never sees a key and never decrypts (that is the vault's job).
 *
 * Backends: {@link layerMemory} (here), SQLite (`layers/sqlite`) and PostgreSQL (`layers/pg`), each sharing the
 * identity store's database.
 */
import { Context, Data, Effect, Either, Layer, Option, Schema } from "effect"
import type { Redacted } from "effect"
import { notFound, StoreError } from "../errors/StoreError.js"
import { formatError } from "../schema/Config.js"
import { EncryptedData } from "../schema/EncryptedData.js"

export interface Service {
  /** The blob stored for `provider`, from memory. */
  readonly get: (provider: string) => Effect.Effect<Option.Option<EncryptedData>>
  /** Store (insert or replace) the blob for `provider`. */
  readonly put: (provider: string, data: EncryptedData) => Effect.Effect<void, StoreError>
  /** Remove the blob for `provider`; `NotFound` if there is none. */
  readonly delete: (provider: string) => Effect.Effect<void, StoreError>
  /** Provider names with a stored blob, sorted. */
  readonly list: Effect.Effect<ReadonlyArray<string>>
}

export class CredentialStore extends Context.Tag("alknet/CredentialStore")<CredentialStore, Service>() {}

/** A stored credential that cannot be used: there is none by that name, or it does not decrypt (`message` says which). */
export class CredentialUnavailable extends Data.TaggedError("CredentialUnavailable")<{
  readonly provider: string
  readonly message: string
}> {}

/**
 * The value of the credential `provider`, decrypted by `vault` (the store itself never decrypts): what a node sends
 * an outbound peer or an imported API. Fails `credential NAME not found` or `credential NAME: <why it does not decrypt>`.
 */
export const decrypted = (
  store: Service,
  vault: { readonly decrypt: (blob: EncryptedData) => Effect.Effect<Redacted.Redacted<string>, { readonly message: string }> },
  provider: string
): Effect.Effect<Redacted.Redacted<string>, CredentialUnavailable> =>
  Effect.flatMap(store.get(provider), (blob) =>
    Option.isNone(blob)
      ? Effect.fail(new CredentialUnavailable({ provider, message: `credential ${provider} not found` }))
      : Effect.mapError(vault.decrypt(blob.value), (e) => new CredentialUnavailable({ provider, message: `credential ${provider}: ${e.message}` })))

/** Check a provider name and blob before they reach storage. */
export const validate = (provider: string, data: EncryptedData): Either.Either<EncryptedData, StoreError> =>
  provider.length === 0
    ? Either.left(new StoreError({ reason: "Serialization", message: "invalid credential: empty provider name" }))
    : Either.mapLeft(
      Schema.validateEither(EncryptedData)(data),
      (error) =>
        new StoreError({
          reason: "Serialization",
          message: `invalid credential ${JSON.stringify(provider)}: ${formatError(error)}`
        })
    )

/** Read side shared by the backends: lookups against one immutable map, replaced whole on change. */
export const fromMap = (current: () => ReadonlyMap<string, EncryptedData>): Pick<Service, "get" | "list"> => ({
  get: (provider) => Effect.sync(() => Option.fromNullable(current().get(provider))),
  list: Effect.sync(() => [...current().keys()].sort())
})

export const makeMemory: Effect.Effect<Service> = Effect.sync(() => {
  let blobs: ReadonlyMap<string, EncryptedData> = new Map()
  return CredentialStore.of({
    ...fromMap(() => blobs),
    put: (provider, data) =>
      Effect.suspend(() =>
        Either.match(validate(provider, data), {
          onLeft: Effect.fail,
          onRight: (blob) => Effect.sync(() => void (blobs = new Map(blobs).set(provider, blob)))
        })
      ),
    delete: (provider) =>
      Effect.suspend(() => {
        if (!blobs.has(provider)) return Effect.fail(notFound("credential", provider))
        const next = new Map(blobs)
        next.delete(provider)
        blobs = next
        return Effect.void
      })
  })
})

export const layerMemory: Layer.Layer<CredentialStore> = Layer.effect(CredentialStore, makeMemory)
