/**
 * The per-node composition env of the peer graph (SPEC §2, §9): the operations a handler reaches through `ctx.env`,
 * layered as **session overlay → peers in insertion order → local base**.
 *
 * - A peer's overlay is keyed by its `PeerId` (the peer's `Identity.id`, stable across key rotation) and holds the
 *   leaves an adapter imported from it (`from_call`). It lives in a `Scope` — a connection's — and closing that scope
 *   removes the peer's operations; the peer is then *disconnected*: calls routed to it fail at once with INTERNAL
 *   `peer {id} is not connected` until it is back.
 * - `ctx.env.invoke(name)` routes through the overlays (first connected peer that serves the name, else the local
 *   base); `ctx.env.invokePeer(PeerRef.Specific(id) | PeerRef.Any, name)` addresses peers: Specific goes only to that
 *   peer (`NOT_FOUND` if it does not serve the name), Any to the first connected peer that does.
 * - Reachability is the handler's scoped env (`ScopedPeerEnv`): plain names may be routed anywhere; a peer-pinned
 *   entry `peer-id/op-name` allows that operation on that peer only. A pinned name also resolves through
 *   `ctx.env.invoke("peer-id/op-name")`.
 * - Session overlays: `openSession(ctx, { authority, operations })` adds `Session` operations (always Internal,
 *   running under the authority given) reachable only through the env it returns; they vanish with its scope.
 *
 * A node owns one: it serves `source` (its local operations first, so a peer can never shadow them on the wire) and
 * passes `extendEnv` to `CallProtocol` / `CallClient`, so every handler's `ctx.env` routes through the peers.
 * The implementation is `peer/Composite.ts`; `peer/Peer.ts` attaches connections (and reconnects).
 */
import { Context, Data, Effect } from "effect"
import type { Scope } from "effect"
import type { OperationSource } from "../call/Dispatcher.js"
import type { AdapterError } from "../errors/AdapterError.js"
import * as CallError from "../errors/CallError.js"
import type { OperationSummary } from "../schema/OperationSpec.js"
import type { OperationAdapter } from "./OperationAdapter.js"
import type { LocalCallOptions } from "./OperationRegistry.js"
import type * as Operation from "./Operation.js"

/** A peer's logical id: its `Identity.id` (`PeerEntry.peer_id`). */
export type PeerId = string

/** Which peer `invokePeer` goes to. */
export type PeerRef = Data.TaggedEnum<{
  /** Only this peer. */
  readonly Specific: { readonly id: PeerId }
  /** The first connected peer (insertion order) that serves the name. */
  readonly Any: {}
}>
export const PeerRef = Data.taggedEnum<PeerRef>()
export const Specific = (id: PeerId): PeerRef => PeerRef.Specific({ id })
export const Any: PeerRef = PeerRef.Any()

/** The env a handler sees when its node has a peer graph. */
export interface PeerEnv extends Operation.OperationEnv {
  /** Call an operation of a peer as a child of the current call (same rules as `invoke`). */
  readonly invokePeer: (
    ref: PeerRef,
    name: string,
    input: unknown,
    options?: Operation.InvokeOptions
  ) => Effect.Effect<unknown, CallError.CallError>
  /** Open a session overlay for the current scope (see `Service.openSession`). */
  readonly openSession: (options: SessionOptions) => Effect.Effect<PeerEnv, never, Scope.Scope>
}

/**
 * `ctx.env.invokePeer` for any handler: NOT_FOUND when the handler's node has no peer graph (its env was not
 * extended), so a handler can be written once and run anywhere.
 */
export const invokePeer = (
  ctx: Operation.OperationContext,
  ref: PeerRef,
  name: string,
  input: unknown,
  options?: Operation.InvokeOptions
): Effect.Effect<unknown, CallError.CallError> => {
  const env = ctx.env as Partial<PeerEnv>
  return env.invokePeer === undefined
    ? Effect.fail(CallError.notFound(ref._tag === "Specific" ? `${ref.id}/${name}` : name))
    : env.invokePeer(ref, name, input, options)
}

/** `ctx.env.openSession`; a defect when the handler's node has no peer graph. */
export const openSession = (
  ctx: Operation.OperationContext,
  options: SessionOptions
): Effect.Effect<PeerEnv, never, Scope.Scope> => {
  const env = ctx.env as Partial<PeerEnv>
  return env.openSession === undefined
    ? Effect.dieMessage("openSession: this node has no peer graph (its env was not extended)")
    : env.openSession(options)
}

/** A peer-pinned scoped-env entry. */
export interface Pinned {
  readonly peer: PeerId
  readonly name: string
}

/**
 * A scoped env with peer-pinned entries: `names` may be invoked wherever they route; each `pinned` entry allows one
 * operation on one peer (written `peer-id/op-name`). Pass it as a registration's `env`.
 */
export const scopedPeerEnv = (
  names: Iterable<string>,
  pinned: Iterable<Pinned> = []
): Operation.ScopedEnv => {
  const set = new Set<string>()
  for (const name of names) set.add(name.charCodeAt(0) === 47 ? name.slice(1) : name)
  for (const p of pinned) set.add(pinnedName(p.peer, p.name))
  return Object.freeze({ allows: (name: string) => set.has(name), names: Object.freeze([...set]) })
}

/** `peer-id/op-name`. */
export const pinnedName = (peer: PeerId, name: string): string =>
  `${peer}/${name.charCodeAt(0) === 47 ? name.slice(1) : name}`

/** A peer as the graph knows it now. */
export interface PeerStatus {
  readonly id: PeerId
  readonly connected: boolean
  /** What it serves (when disconnected: what it served last). */
  readonly operations: ReadonlyArray<OperationSummary>
}

export interface SessionOptions {
  /** The authority the session's operations run under (their children's access checks use it). */
  readonly authority: Operation.CompositionAuthority
  /** The session's operations (made `Session`, Internal). */
  readonly operations: Iterable<Operation.HandlerRegistration>
}

export interface AddOptions {
  /**
   * The overlay slot (default `"default"`): adding to a slot the peer already fills replaces what it held (a new
   * connection of the same peer replaces the old one's imports); names colliding with the peer's other slots fail.
   */
  readonly slot?: string
}

export interface Service {
  /** Serve this: the local base first, then what peers exported (imports made External). */
  readonly source: OperationSource
  /** Pass as `ServeOptions.extendEnv` / `ConnectOptions.extendEnv`: handlers' `ctx.env` becomes a `PeerEnv`. */
  readonly extendEnv: (ctx: Operation.OperationContext, env: Operation.OperationEnv) => PeerEnv
  /** The composition env of a context (what `extendEnv` gives it). */
  readonly envOf: (ctx: Operation.OperationContext) => PeerEnv
  /**
   * Add a peer's operations for the life of the current scope (insertion order: a new peer goes last).
   * `SamePeerCollision` when two of them, or one of them and another slot of the same peer, share a name.
   */
  readonly add: (
    peer: PeerId,
    registrations: Iterable<Operation.HandlerRegistration>,
    options?: AddOptions
  ) => Effect.Effect<void, AdapterError, Scope.Scope>
  /** Run an adapter's import and `add` what it returns; the registrations are returned. */
  readonly attach: (
    peer: PeerId,
    adapter: OperationAdapter,
    options?: AddOptions
  ) => Effect.Effect<ReadonlyArray<Operation.HandlerRegistration>, AdapterError, Scope.Scope>
  /** Every peer known, in insertion order. */
  readonly peers: () => ReadonlyArray<PeerStatus>
  /** Resolves once `peer` is connected (has at least one overlay). */
  readonly awaitPeer: (peer: PeerId) => Effect.Effect<void>
  /** Drop a disconnected peer (its calls become NOT_FOUND instead of "not connected"). */
  readonly forget: (peer: PeerId) => Effect.Effect<void>
  /** Open a session overlay for the current scope; its operations are reachable only through the env returned. */
  readonly openSession: (
    ctx: Operation.OperationContext,
    options: SessionOptions
  ) => Effect.Effect<PeerEnv, never, Scope.Scope>
  /**
   * A root query or mutation from in-process code, dispatched as SPEC §5 against `source` (Internal → NOT_FOUND,
   * access control against `identity`), its handlers' env routed through the graph.
   */
  readonly call: (name: string, input: unknown, options?: LocalCallOptions) => Effect.Effect<unknown, CallError.CallError>
  /** Handlers running through the graph's own dispatcher (peer and session calls), for leak checks. */
  readonly running: () => number
}

export class PeerCompositeEnv extends Context.Tag("alknet/PeerCompositeEnv")<PeerCompositeEnv, Service>() {}
