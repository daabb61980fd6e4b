/**
 * The write side of identity (SPEC §13): peers and API keys. It extends {@link IdentityProvider.Service}: a write
 * made through a store is visible to the very next `resolve*` on it (the write returns after the new index is in
 * place). A failed write changes nothing and the previous index keeps serving. (One SQLite case says so in its
 * message: the statement committed, but another writer left a row that does not decode, so the index stays as it
 * was until that row is fixed.)
 *
 * Backends: {@link layerMemory} (here), SQLite (`layers/sqlite`) and PostgreSQL (`layers/pg`). Each layer provides
 * `IdentityStore` and `IdentityProvider` from the same object. A config-file node has no store: the file is its write path.
 */
import { Context, Effect, Either, Layer, Option, Schema, Stream, SubscriptionRef } from "effect"
import type { DateTime, ParseResult, Redacted } from "effect"
import { notFound, StoreError } from "../errors/StoreError.js"
import { ApiKeyEntry } from "../schema/ApiKeyEntry.js"
import { formatError } from "../schema/Config.js"
import { PeerEntry } from "../schema/PeerEntry.js"
import * as IdentityProvider from "./IdentityProvider.js"
import * as Token from "./Token.js"

/** What a new API key grants. */
export interface ApiKeyOptions {
  readonly scopes?: ReadonlyArray<string>
  readonly description?: string
  readonly expires_at?: DateTime.Utc
}

/** A created API key: the token (shown once, never stored) and the stored entry. */
export interface CreatedApiKey {
  readonly token: Redacted.Redacted<string>
  readonly entry: ApiKeyEntry
}

export interface Service extends IdentityProvider.Service {
  /** The stored peer with this id, enabled or not. */
  readonly getPeer: (peerId: string) => Effect.Effect<Option.Option<PeerEntry>>
  /** Every peer, in insertion order (the order "first enabled peer" refers to). */
  readonly listPeers: Effect.Effect<ReadonlyArray<PeerEntry>>
  /** Insert, or replace the peer with the same `peer_id` (keeping its position). */
  readonly putPeer: (peer: PeerEntry) => Effect.Effect<void, StoreError>
  /** Replace an existing peer; `NotFound` if there is none with that `peer_id`. */
  readonly updatePeer: (peer: PeerEntry) => Effect.Effect<void, StoreError>
  /** Remove a peer; `NotFound` if there is none. */
  readonly removePeer: (peerId: string) => Effect.Effect<void, StoreError>
  /** Every API key (hashes only), in insertion order. */
  readonly listApiKeys: Effect.Effect<ReadonlyArray<ApiKeyEntry>>
  /** Insert, or replace the key with the same `prefix`. */
  readonly putApiKey: (key: ApiKeyEntry) => Effect.Effect<void, StoreError>
  /** Generate a token with a prefix unused in this store, store its hash, and return the token once. */
  readonly createApiKey: (options: ApiKeyOptions) => Effect.Effect<CreatedApiKey, StoreError>
  /** Revoke an API key by prefix; `NotFound` if there is none. */
  readonly removeApiKey: (prefix: string) => Effect.Effect<void, StoreError>
  /**
   * The index version (a counter): the current one at once, then each new one after the index is swapped — after
   * a write here, or a change picked up from elsewhere (another process on the same database).
   */
  readonly changes: Stream.Stream<number>
}

export class IdentityStore extends Context.Tag("alknet/IdentityStore")<IdentityStore, Service>() {}

const invalid = (what: string) => (error: ParseResult.ParseError) =>
  new StoreError({ reason: "Serialization", message: `invalid ${what}: ${formatError(error)}` })

/** Check an entry built in code (it may bypass `PeerEntry.make`) before it reaches storage. */
export const validatePeer = (peer: PeerEntry): Either.Either<PeerEntry, StoreError> =>
  Either.mapLeft(Schema.validateEither(PeerEntry)(peer), invalid(`peer ${JSON.stringify(peer.peer_id)}`))

/** Check an API-key entry built in code before it reaches storage. */
export const validateApiKey = (key: ApiKeyEntry): Either.Either<ApiKeyEntry, StoreError> =>
  Either.mapLeft(Schema.validateEither(ApiKeyEntry)(key), invalid(`api key ${JSON.stringify(key.prefix)}`))

/**
 * The in-memory index a backend serves from: one variable holding an immutable {@link IdentityProvider.Index},
 * replaced whole by `update`, plus the version counter behind `changes`. `update` computes and assigns the new
 * index in one synchronous step, so concurrent writers cannot lose each other's changes; when `f` fails nothing
 * changes.
 */
export interface LiveIndex {
  readonly current: () => IdentityProvider.Index
  readonly update: <E>(
    f: (index: IdentityProvider.Index) => Either.Either<IdentityProvider.Index, E>
  ) => Effect.Effect<void, E>
  readonly changes: Stream.Stream<number>
  readonly provider: IdentityProvider.Service
}

export const makeLiveIndex = (initial: IdentityProvider.Index): Effect.Effect<LiveIndex> =>
  Effect.map(Effect.zip(SubscriptionRef.make(0), Effect.clock), ([version, clock]) => {
    let index = initial
    const current = () => index
    return {
      current,
      update: (f) =>
        Effect.suspend(() => {
          const next = f(index)
          if (Either.isLeft(next)) return Effect.fail(next.left)
          index = next.right
          return SubscriptionRef.update(version, (n) => n + 1)
        }),
      changes: version.changes,
      provider: IdentityProvider.fromIndex(current, clock)
    }
  })

/**
 * `createApiKey` over a backend's insert-if-absent (`false` when the prefix is taken). A prefix collision (24
 * random bits) just draws a new token.
 */
export const createApiKeyWith = (insert: (key: ApiKeyEntry) => Effect.Effect<boolean, StoreError>) =>
(options: ApiKeyOptions): Effect.Effect<CreatedApiKey, StoreError> =>
  Effect.gen(function*() {
    for (let attempt = 0; attempt < 16; attempt++) {
      const { hash, prefix, token } = yield* Token.generate
      const entry: ApiKeyEntry = {
        prefix,
        hash,
        scopes: options.scopes ?? [],
        description: options.description ?? "",
        ...(options.expires_at === undefined ? {} : { expires_at: options.expires_at })
      }
      if (yield* insert(entry)) return { token, entry }
    }
    return yield* new StoreError({ reason: "Backend", message: "could not allocate an unused API-key prefix" })
  })

/**
 * Give a peer a fresh bearer token: store its hash as the peer's `auth_token_hash` (replacing any previous one)
 * and return the token, once. `NotFound` if the peer does not exist.
 */
export const issuePeerToken = (peerId: string): Effect.Effect<Redacted.Redacted<string>, StoreError, IdentityStore> =>
  Effect.gen(function*() {
    const store = yield* IdentityStore
    const peer = yield* Effect.flatten(store.getPeer(peerId)).pipe(
      Effect.catchTag("NoSuchElementException", () => notFound("peer", peerId))
    )
    const { hash, token } = yield* Token.generate
    yield* store.updatePeer({ ...peer, auth_token_hash: hash })
    return token
  })

const upsert = <A>(list: ReadonlyArray<A>, item: A, same: (a: A) => boolean): ReadonlyArray<A> => {
  const at = list.findIndex(same)
  return at === -1 ? [...list, item] : list.map((existing, i) => i === at ? item : existing)
}

const prefixTaken = new StoreError({ reason: "Backend", message: "API-key prefix already taken" })

type Entries = readonly [ReadonlyArray<PeerEntry>, ReadonlyArray<ApiKeyEntry>]

/** The memory backend: a real store whose storage is the index itself. */
export const makeMemory = (
  initial: { readonly peers?: ReadonlyArray<PeerEntry>; readonly apiKeys?: ReadonlyArray<ApiKeyEntry> } = {}
): Effect.Effect<Service> =>
  Effect.gen(function*() {
    const live = yield* makeLiveIndex(IdentityProvider.makeIndex(initial.peers ?? [], initial.apiKeys ?? []))
    const peers = () => live.current().peers
    const apiKeys = () => live.current().apiKeys
    /** Check and apply a change against the current entries in one synchronous step. */
    const write = (
      f: (peers: ReadonlyArray<PeerEntry>, apiKeys: ReadonlyArray<ApiKeyEntry>) => Either.Either<Entries, StoreError>
    ) =>
      live.update((index) =>
        Either.map(f(index.peers, index.apiKeys), (entries) => IdentityProvider.makeIndex(...entries))
      )
    const samePeer = (peerId: string) => (p: PeerEntry) => p.peer_id === peerId
    const sameKey = (prefix: string) => (k: ApiKeyEntry) => k.prefix === prefix

    const putPeer = (peer: PeerEntry) =>
      write((ps, ks) => Either.map(validatePeer(peer), (p) => [upsert(ps, p, samePeer(p.peer_id)), ks]))
    const putApiKey = (key: ApiKeyEntry) =>
      write((ps, ks) => Either.map(validateApiKey(key), (k) => [ps, upsert(ks, k, sameKey(k.prefix))]))

    return IdentityStore.of({
      ...live.provider,
      getPeer: (peerId) => Effect.sync(() => Option.fromNullable(peers().find(samePeer(peerId)))),
      listPeers: Effect.sync(peers),
      putPeer,
      updatePeer: (peer) =>
        write((ps, ks) =>
          ps.some(samePeer(peer.peer_id))
            ? Either.map(validatePeer(peer), (p) => [upsert(ps, p, samePeer(p.peer_id)), ks])
            : Either.left(notFound("peer", peer.peer_id))
        ),
      removePeer: (peerId) =>
        write((ps, ks) =>
          ps.some(samePeer(peerId))
            ? Either.right([ps.filter((p) => !samePeer(peerId)(p)), ks])
            : Either.left(notFound("peer", peerId))
        ),
      listApiKeys: Effect.sync(apiKeys),
      putApiKey,
      createApiKey: createApiKeyWith((key) =>
        write((ps, ks) =>
          ks.some(sameKey(key.prefix))
            ? Either.left(prefixTaken)
            : Either.map(validateApiKey(key), (k) => [ps, [...ks, k]])
        ).pipe(Effect.as(true), Effect.catchIf((e) => e === prefixTaken, () => Effect.succeed(false)))
      ),
      removeApiKey: (prefix) =>
        write((ps, ks) =>
          ks.some(sameKey(prefix))
            ? Either.right([ps, ks.filter((k) => !sameKey(prefix)(k))])
            : Either.left(notFound("api key", prefix))
        ),
      changes: live.changes
    })
  })

/** Provide a store and the provider reading it (one object), starting from `initial`. */
export const layerMemory = (
  initial: { readonly peers?: ReadonlyArray<PeerEntry>; readonly apiKeys?: ReadonlyArray<ApiKeyEntry> } = {}
): Layer.Layer<IdentityStore | IdentityProvider.IdentityProvider> =>
  Layer.effectContext(
    Effect.map(
      makeMemory(initial),
      (store) => Context.make(IdentityStore, store).pipe(Context.add(IdentityProvider.IdentityProvider, store))
    )
  )
