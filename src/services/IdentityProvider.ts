/**
 * Who is calling (SPEC §10): resolve a TLS fingerprint or a bearer token to an {@link Identity}.
 *
 * Reads never wait on I/O: every backend keeps an immutable {@link Index} in memory and swaps it whole when its
 * source changes (a write, a config reload, another process's commit). A lookup is one or two `Map` reads; a token
 * lookup also hashes the token once.
 *
 * Resolution rules:
 * - fingerprint → the first enabled peer listing it;
 * - token → the first enabled peer whose `auth_token_hash` matches; else the token must start with `alk_`, its
 *   first 8 characters select the API key with that `prefix`, the key's hash must match (constant-time) and the key
 *   must not be expired (`now >= expires_at` is rejected; "now" is Effect's `Clock` — the one in force when the
 *   backend's layer was built — so `TestClock` drives it in tests);
 * - disabled peers resolve to nothing, by any credential.
 */
import { Context, Effect, Layer, Option, Redacted } from "effect"
import type { Clock } from "effect"
import type { ApiKeyEntry } from "../schema/ApiKeyEntry.js"
import type { Identity } from "../schema/Identity.js"
import type { PeerEntry } from "../schema/PeerEntry.js"
import * as Token from "./Token.js"

export interface Service {
  /** The identity of a TLS fingerprint (`ed25519:<hex>` / `SHA256:<hex>`), if an enabled peer lists it. */
  readonly resolveFingerprint: (fingerprint: string) => Effect.Effect<Option.Option<Identity>>
  /** The identity a bearer token stands for, if any. */
  readonly resolveToken: (token: Redacted.Redacted<string>) => Effect.Effect<Option.Option<Identity>>
}

export class IdentityProvider extends Context.Tag("alknet/IdentityProvider")<IdentityProvider, Service>() {}

interface ApiKeySlot {
  readonly digest: Buffer
  readonly expiresAt: number | undefined
  readonly identity: Option.Option<Identity>
}

/** An immutable snapshot of peers and API keys, indexed for O(1) resolution. */
export interface Index {
  readonly peers: ReadonlyArray<PeerEntry>
  readonly apiKeys: ReadonlyArray<ApiKeyEntry>
  /** fingerprint → identity of the first enabled peer listing it */
  readonly byFingerprint: ReadonlyMap<string, Option.Option<Identity>>
  /** lowercase hex of a token hash → identity of the first enabled peer with that hash */
  readonly byTokenHex: ReadonlyMap<string, Option.Option<Identity>>
  /** API-key prefix → slot */
  readonly byPrefix: ReadonlyMap<string, ApiKeySlot>
}

const freezeIdentity = (id: string, scopes: ReadonlyArray<string>, resources: Identity["resources"]) =>
  Option.some<Identity>(Object.freeze({
    id,
    scopes: Object.freeze([...scopes]),
    resources: Object.freeze(
      Object.fromEntries(Object.entries(resources).map(([type, actions]) => [type, Object.freeze([...actions])]))
    )
  }))

// Rebuilding an index after one change reuses what it can: entries are immutable, so an entry object seen before
// maps to the same identity (and API-key slot) as before.
const peerIdentities = new WeakMap<PeerEntry, Option.Option<Identity>>()
const apiKeySlots = new WeakMap<ApiKeyEntry, ApiKeySlot | undefined>()

const identityOf = (peer: PeerEntry): Option.Option<Identity> => {
  let identity = peerIdentities.get(peer)
  if (identity === undefined) {
    identity = freezeIdentity(peer.peer_id, peer.scopes, peer.resources)
    peerIdentities.set(peer, identity)
  }
  return identity
}

const slotOf = (key: ApiKeyEntry): ApiKeySlot | undefined => {
  if (apiKeySlots.has(key)) return apiKeySlots.get(key)
  const digest = Token.digestOf(key.hash)
  const slot = digest === undefined
    ? undefined
    : { digest, expiresAt: key.expires_at?.epochMillis, identity: freezeIdentity(key.prefix, key.scopes, {}) }
  apiKeySlots.set(key, slot)
  return slot
}

/** Build the index. Later peers never shadow earlier ones ("first enabled peer wins"). */
export const makeIndex = (peers: ReadonlyArray<PeerEntry>, apiKeys: ReadonlyArray<ApiKeyEntry>): Index => {
  const byFingerprint = new Map<string, Option.Option<Identity>>()
  const byTokenHex = new Map<string, Option.Option<Identity>>()
  for (const peer of peers) {
    if (!peer.enabled) continue
    const identity = identityOf(peer)
    for (const fingerprint of peer.fingerprints) {
      if (!byFingerprint.has(fingerprint)) byFingerprint.set(fingerprint, identity)
    }
    const hex = peer.auth_token_hash?.slice("sha256:".length)
    if (hex !== undefined && !byTokenHex.has(hex)) byTokenHex.set(hex, identity)
  }
  const byPrefix = new Map<string, ApiKeySlot>()
  for (const key of apiKeys) {
    const slot = slotOf(key)
    if (slot !== undefined && !byPrefix.has(key.prefix)) byPrefix.set(key.prefix, slot)
  }
  return { peers, apiKeys, byFingerprint, byTokenHex, byPrefix }
}

export const emptyIndex: Index = makeIndex([], [])

/** Fingerprint lookup against a snapshot (synchronous). */
export const lookupFingerprint = (index: Index, fingerprint: string): Option.Option<Identity> =>
  index.byFingerprint.get(fingerprint) ?? Option.none()

/**
 * Token lookup against a snapshot (synchronous). `nowMillis` is asked only when the matching API key has an
 * expiry.
 */
export const lookupToken = (index: Index, token: string, nowMillis: () => number): Option.Option<Identity> => {
  const hex = Token.sha256Hex(token)
  const peer = index.byTokenHex.get(hex)
  if (peer !== undefined) return peer
  const prefix = Token.prefixOf(token)
  const slot = prefix === undefined ? undefined : index.byPrefix.get(prefix)
  if (slot === undefined || !Token.digestEquals(hex, slot.digest)) return Option.none()
  return slot.expiresAt !== undefined && Token.isExpired(slot.expiresAt, nowMillis()) ? Option.none() : slot.identity
}

/**
 * A provider reading whatever snapshot `current()` returns at the moment of the lookup. Backends keep the snapshot
 * in one variable and replace it whole, so a reader sees either the old or the new index, never a mix. `clock` is
 * the Clock in force when the backend's layer was built (a `TestClock` in tests); it is read only for keys that
 * expire.
 */
export const fromIndex = (current: () => Index, clock: Clock.Clock): Service => {
  const now = () => clock.unsafeCurrentTimeMillis()
  return {
    resolveFingerprint: (fingerprint) => Effect.sync(() => lookupFingerprint(current(), fingerprint)),
    resolveToken: (token) => Effect.sync(() => lookupToken(current(), Redacted.value(token), now))
  }
}

/** A read-only provider over a fixed set of entries (tests, embedding). */
export const layerEntries = (
  peers: ReadonlyArray<PeerEntry>,
  apiKeys: ReadonlyArray<ApiKeyEntry> = []
): Layer.Layer<IdentityProvider> => {
  const index = makeIndex(peers, apiKeys)
  return Layer.effect(IdentityProvider, Effect.map(Effect.clock, (clock) => fromIndex(() => index, clock)))
}

