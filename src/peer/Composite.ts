/**
 * The peer graph's composition env (`PeerCompositeEnv`, SPEC §9): peer overlays keyed by PeerId over a local base,
 * session overlays, `invokePeer`, and the opt-in `services/list-peers`.
 *
 * Lookups are served from indexes rebuilt when an overlay comes or goes (rare), so routing a call costs a few map
 * reads. Calls routed through the graph run through its own dispatcher (`invokeRegistration`): the child gets the
 * authority switch, fresh metadata, the parent's deadline and abort policy, exactly as `ctx.env.invoke` on the base.
 *
 * `services/list-peers` follows the rule of `services/list`: a caller sees only what it could call (External
 * operations whose access control it meets, the node's own or a peer's; a peer with none is left out); a caller with
 * `alknet:admin` sees every operation of every connected peer, Internal imports included.
 */
import { Deferred, Effect, FiberId, Layer, Option, Schema, Stream } from "effect"
import type { Scope } from "effect"
import * as Dispatcher from "../call/Dispatcher.js"
import type { OperationSource } from "../call/Dispatcher.js"
import * as AdapterError from "../errors/AdapterError.js"
import * as CallError from "../errors/CallError.js"
import { isAdmin } from "../schema/Identity.js"
import { OperationSummary } from "../schema/OperationSpec.js"
import * as Operation from "../services/Operation.js"
import type { HandlerRegistration, InvokeOptions, OperationContext } from "../services/Operation.js"
import type { OperationAdapter } from "../services/OperationAdapter.js"
import * as OperationRegistry from "../services/OperationRegistry.js"
import type { AddOptions, PeerEnv, PeerId, PeerRef, PeerStatus, Service, SessionOptions } from "../services/PeerCompositeEnv.js"
import { PeerCompositeEnv, pinnedName } from "../services/PeerCompositeEnv.js"

export const LIST_PEERS = "services/list-peers"

export interface Options {
  /** Serve `services/list-peers` (External; default false). */
  readonly listPeers?: boolean
  /** Access control of `services/list-peers` (default: open). */
  readonly listPeersAccess?: Operation.AccessControlInput
}

interface PeerState {
  readonly id: PeerId
  /** Overlay slots, each the registrations of one import (e.g. one connection). */
  readonly slots: Map<string, { readonly byName: Map<string, HandlerRegistration> }>
  /** What it served when last connected: answered "not connected" while it is away. */
  lastSeen: ReadonlyArray<HandlerRegistration>
}

const summary = (registration: HandlerRegistration): OperationSummary => ({
  name: registration.spec.name,
  namespace: registration.spec.namespace,
  op_type: registration.spec.opType
})

export const notConnected = (peer: PeerId): CallError.CallError => CallError.internal(`peer ${peer} is not connected`)

/** A registration standing for an operation of a disconnected peer: it fails at once, naming the peer. */
const absent = (peer: PeerId, registration: HandlerRegistration): HandlerRegistration =>
  Operation.registration(
    registration.spec,
    registration.handler._tag === "Unary"
      ? { _tag: "Unary", run: () => Effect.fail(notConnected(peer)) }
      : { _tag: "Streaming", run: () => Stream.fail(notConnected(peer)) },
    { provenance: registration.provenance, visibility: registration.spec.visibility }
  )

/** An External import as the wire sees it under its pinned name `peer-id/op-name` (PeerRef.Specific for callers). */
const renamed = (peer: PeerId, registration: HandlerRegistration): HandlerRegistration => {
  const name = pinnedName(peer, registration.spec.name)
  return Operation.registration(
    { ...registration.spec, name, namespace: peer },
    registration.handler,
    { provenance: registration.provenance, visibility: registration.spec.visibility }
  )
}

const ListPeersOutput = Schema.Struct({
  peers: Schema.Array(Schema.Struct({ peer_id: Schema.String, operations: Schema.Array(OperationSummary) }))
})

/** Build the graph over `base` (the node's curated registry source) for the life of the scope. */
export const make = (base: OperationSource, options: Options = {}): Effect.Effect<Service, never, Scope.Scope> =>
  Effect.gen(function*() {
    const peers = new Map<PeerId, PeerState>()
    const waiters = new Map<PeerId, Array<Deferred.Deferred<void>>>()
    // Indexes, rebuilt on every change.
    let routed = new Map<string, HandlerRegistration>() // first connected peer serving the name
    let pinned = new Map<string, HandlerRegistration>() // `peer-id/op-name`
    let away = new Map<string, HandlerRegistration>() // names only disconnected peers served
    let exported = new Map<string, HandlerRegistration>() // External imports, served after the base
    let exportedPinned = new Map<string, HandlerRegistration>() // External imports as `peer-id/op-name` on the wire

    const connected = (state: PeerState) => state.slots.size > 0
    const operationsOf = (state: PeerState): Array<HandlerRegistration> => {
      const all: Array<HandlerRegistration> = []
      for (const slot of state.slots.values()) all.push(...slot.byName.values())
      return all
    }

    const rebuild = () => {
      const nextRouted = new Map<string, HandlerRegistration>()
      const nextPinned = new Map<string, HandlerRegistration>()
      const nextAway = new Map<string, HandlerRegistration>()
      const nextExported = new Map<string, HandlerRegistration>()
      const nextExportedPinned = new Map<string, HandlerRegistration>()
      const exportPinned = (peer: PeerId, registration: HandlerRegistration) => {
        if (registration.spec.visibility === "external") {
          nextExportedPinned.set(pinnedName(peer, registration.spec.name), renamed(peer, registration))
        }
      }
      for (const state of peers.values()) {
        if (connected(state)) {
          for (const registration of operationsOf(state)) {
            const name = registration.spec.name
            if (!nextRouted.has(name)) nextRouted.set(name, registration)
            if (registration.spec.visibility === "external" && !nextExported.has(name)) nextExported.set(name, registration)
            nextPinned.set(pinnedName(state.id, name), registration)
            exportPinned(state.id, registration)
          }
        } else {
          for (const registration of state.lastSeen) {
            const stub = absent(state.id, registration)
            if (!nextAway.has(registration.spec.name)) nextAway.set(registration.spec.name, stub)
            nextPinned.set(pinnedName(state.id, registration.spec.name), stub)
            exportPinned(state.id, stub)
          }
        }
      }
      // A name only disconnected peers served answers "not connected" on the wire too (not NOT_FOUND).
      for (const [name, stub] of nextAway) {
        if (stub.spec.visibility === "external" && !nextExported.has(name)) nextExported.set(name, stub)
      }
      exportedPinned = nextExportedPinned
      routed = nextRouted
      pinned = nextPinned
      away = nextAway
      exported = nextExported
    }

    const listPeers = Operation.query({
      name: LIST_PEERS,
      description: "The operations of this node (peer_id \"local\") and of each connected peer.",
      input: Schema.Union(Schema.Struct({}), Schema.Null),
      output: ListPeersOutput,
      ...(options.listPeersAccess === undefined ? {} : { access: options.listPeersAccess }),
      handler: (_, ctx) =>
        Effect.sync(() => {
          // A caller sees what it could call: External operations whose access control it meets. An admin sees the
          // graph: every operation of every connected peer, Internal imports included.
          const admin = isAdmin(ctx.identity)
          const callable = (registration: HandlerRegistration) =>
            registration.spec.visibility === "external" &&
            Operation.check(registration.spec.accessControl, ctx.identity) === undefined
          const local: Array<OperationSummary> = []
          for (const registration of base.list()) if (callable(registration)) local.push(summary(registration))
          if (options.listPeers === true && callable(listPeers)) local.push(summary(listPeers))
          const remote = [...peers.values()].filter(connected).flatMap((state) => {
            const operations = operationsOf(state).filter((registration) => admin || callable(registration))
            return operations.length === 0 && !admin ? [] : [{ peer_id: state.id, operations: operations.map(summary) }]
          })
          return { peers: [{ peer_id: "local", operations: local }, ...remote] }
        })
    })
    const own = options.listPeers === true ? listPeers : undefined

    /** What the node serves: its own operations first (a peer never shadows them on the wire), then exports. */
    const source: OperationSource = {
      lookup: (name) => {
        if (own !== undefined && name === LIST_PEERS) return own
        const normalized = Operation.normalizeName(name)
        return base.lookup(name) ?? exported.get(normalized) ?? exportedPinned.get(normalized)
      },
      list: function*() {
        yield* base.list()
        if (own !== undefined) yield own
        for (const registration of exported.values()) if (base.lookup(registration.spec.name) === undefined) yield registration
        for (const registration of exportedPinned.values()) if (base.lookup(registration.spec.name) === undefined) yield registration
      }
    }

    /** Routing for `ctx.env.invoke`: peers (insertion order) → local base → pinned names → disconnected peers. */
    const resolve = (name: string): HandlerRegistration | undefined =>
      routed.get(name) ?? base.lookup(name) ?? pinned.get(name) ?? away.get(name)

    const dispatcher = yield* Dispatcher.make({ source, extendEnv: (ctx) => envOf(ctx) })

    const invoke = (ctx: OperationContext, rawName: string, input: unknown, invokeOptions?: InvokeOptions) => {
      const name = Operation.normalizeName(rawName)
      if (!ctx.scopedEnv.allows(name)) return Effect.fail(CallError.notFound(name))
      const registration = resolve(name)
      return registration === undefined
        ? Effect.fail(CallError.notFound(name))
        : dispatcher.invokeRegistration(ctx, registration, input, invokeOptions, source)
    }

    const allowedOn = (ctx: OperationContext, peer: PeerId, name: string) =>
      ctx.scopedEnv.allows(name) || ctx.scopedEnv.allows(pinnedName(peer, name))

    const invokePeer = (
      ctx: OperationContext,
      ref: PeerRef,
      rawName: string,
      input: unknown,
      invokeOptions?: InvokeOptions
    ): Effect.Effect<unknown, CallError.CallError> => {
      const name = Operation.normalizeName(rawName)
      const run = (registration: HandlerRegistration) =>
        dispatcher.invokeRegistration(ctx, registration, input, invokeOptions, source)
      if (ref._tag === "Specific") {
        const state = peers.get(ref.id)
        if (state === undefined || !allowedOn(ctx, ref.id, name)) {
          return Effect.fail(CallError.notFound(pinnedName(ref.id, name)))
        }
        if (!connected(state)) {
          return state.lastSeen.some((r) => r.spec.name === name)
            ? Effect.fail(notConnected(ref.id))
            : Effect.fail(CallError.notFound(pinnedName(ref.id, name)))
        }
        for (const slot of state.slots.values()) {
          const registration = slot.byName.get(name)
          if (registration !== undefined) return run(registration)
        }
        return Effect.fail(CallError.notFound(pinnedName(ref.id, name)))
      }
      let absentPeer: PeerId | undefined
      for (const state of peers.values()) {
        if (!allowedOn(ctx, state.id, name)) continue
        if (!connected(state)) {
          if (absentPeer === undefined && state.lastSeen.some((r) => r.spec.name === name)) absentPeer = state.id
          continue
        }
        for (const slot of state.slots.values()) {
          const registration = slot.byName.get(name)
          if (registration !== undefined) return run(registration)
        }
      }
      return Effect.fail(absentPeer === undefined ? CallError.notFound(name) : notConnected(absentPeer))
    }

    const envOf = (ctx: OperationContext): PeerEnv =>
      Object.freeze({
        invoke: (name: string, input: unknown, o?: InvokeOptions) => invoke(ctx, name, input, o),
        invokePeer: (ref: PeerRef, name: string, input: unknown, o?: InvokeOptions) => invokePeer(ctx, ref, name, input, o),
        openSession: (session: SessionOptions) => openSession(ctx, session)
      })

    const wake = (peer: PeerId) => {
      const waiting = waiters.get(peer) ?? []
      waiters.delete(peer)
      return Effect.forEach(waiting, (waiter) => Deferred.succeed(waiter, undefined), { discard: true })
    }

    const add = (
      peer: PeerId,
      registrations: Iterable<HandlerRegistration>,
      addOptions: AddOptions = {}
    ): Effect.Effect<void, AdapterError.AdapterError, Scope.Scope> =>
      Effect.suspend(() => {
        const slotName = addOptions.slot ?? "default"
        const byName = new Map<string, HandlerRegistration>()
        const state: PeerState = peers.get(peer) ?? { id: peer, slots: new Map(), lastSeen: [] }
        for (const registration of registrations) {
          const name = registration.spec.name
          let clash = byName.has(name)
          for (const [other, slot] of state.slots) if (other !== slotName && slot.byName.has(name)) clash = true
          if (clash) {
            return Effect.fail(AdapterError.make("SamePeerCollision", `peer ${peer} already serves ${name}`))
          }
          byName.set(name, registration)
        }
        const slot = { byName }
        return Effect.acquireRelease(
          Effect.suspend(() => {
            state.slots.set(slotName, slot)
            peers.set(peer, state)
            rebuild()
            return wake(peer)
          }),
          () =>
            Effect.sync(() => {
              // A newer import of the same slot may have replaced this one: leave it.
              if (state.slots.get(slotName) !== slot) return
              state.lastSeen = operationsOf(state)
              state.slots.delete(slotName)
              if (!connected(state) && state.lastSeen.length === 0 && peers.get(peer) === state) peers.delete(peer)
              rebuild()
            })
        )
      })

    const attach = (peer: PeerId, adapter: OperationAdapter, addOptions?: AddOptions) =>
      Effect.flatMap(adapter.import(), (registrations) => Effect.as(add(peer, registrations, addOptions), registrations))

    const openSession = (ctx: OperationContext, session: SessionOptions): Effect.Effect<PeerEnv, never, Scope.Scope> =>
      Effect.gen(function*() {
        const ops = new Map<string, HandlerRegistration>()
        for (const registration of session.operations) {
          ops.set(
            registration.spec.name,
            Operation.registration(registration.spec, registration.handler, {
              provenance: "Session",
              authority: session.authority,
              env: registration.scopedEnv,
              capabilities: registration.capabilities
            })
          )
        }
        let open = true
        yield* Effect.addFinalizer(() => Effect.sync(() => (open = false)))
        const outer = envOf(ctx)
        // Session operations run under the session's authority: their access check and their `ctx.identity` use it.
        const asSession: OperationContext = Object.freeze({ ...ctx, handlerIdentity: Option.some(session.authority) })
        return Object.freeze({
          invoke: (rawName: string, input: unknown, o?: InvokeOptions) => {
            const name = Operation.normalizeName(rawName)
            const registration = ops.get(name)
            if (registration === undefined) return outer.invoke(name, input, o)
            return open
              ? dispatcher.invokeRegistration(asSession, registration, input, o, source)
              : Effect.fail(CallError.notFound(name))
          },
          invokePeer: outer.invokePeer,
          openSession: outer.openSession
        })
      })

    return PeerCompositeEnv.of({
      source,
      extendEnv: (ctx) => envOf(ctx),
      envOf,
      add,
      attach,
      peers: () =>
        [...peers.values()].map((state): PeerStatus => ({
          id: state.id,
          connected: connected(state),
          operations: (connected(state) ? operationsOf(state) : state.lastSeen).map(summary)
        })),
      awaitPeer: (peer) =>
        Effect.suspend(() => {
          const state = peers.get(peer)
          if (state !== undefined && connected(state)) return Effect.void
          const waiter = Deferred.unsafeMake<void>(FiberId.none)
          const waiting = waiters.get(peer) ?? []
          waiting.push(waiter)
          waiters.set(peer, waiting)
          return Effect.ensuring(
            Deferred.await(waiter),
            Effect.sync(() => {
              const left = (waiters.get(peer) ?? []).filter((w) => w !== waiter)
              if (left.length === 0) waiters.delete(peer)
              else waiters.set(peer, left)
            })
          )
        }),
      forget: (peer) =>
        Effect.sync(() => {
          const state = peers.get(peer)
          if (state !== undefined && !connected(state)) {
            peers.delete(peer)
            rebuild()
          }
        }),
      openSession,
      call: (name, input, callOptions = {}) =>
        Effect.flatMap(
          dispatcher.prepare(OperationRegistry.localRequest(name, input, callOptions), "unary"),
          (prepared) => prepared._tag === "Unary" ? prepared.run : Effect.dieMessage("unreachable")
        ),
      running: () => dispatcher.running()
    })
  })

/** The graph as a layer over a base source (e.g. `registry.source`). */
export const layer = (base: OperationSource, options?: Options): Layer.Layer<PeerCompositeEnv> =>
  Layer.scoped(PeerCompositeEnv, make(base, options))
