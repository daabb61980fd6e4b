/**
 * The node's metrics outside the call engine (definitions in `Metrics.ts`): open connections by transport, outbound
 * peer links by state, live store reloads, and authentication failures. Each update is a cached label array and one
 * `unsafeUpdate` / `unsafeModify`, as on the engine's hot path.
 */
import { Effect } from "effect"
import type { Scope } from "effect"
import * as Metrics from "./Metrics.js"

/** Where a connection or an authentication came in: the call protocol's transports, SSH, and the HTTP gateway. */
export type Transport = "quic" | "ws" | "memory" | "ssh" | "http"

/** A live store: the config file, or the SQLite / PostgreSQL index of peers, API keys and credentials. */
export type Store = "config" | "sqlite" | "postgres"

const transports = new Metrics.Labels("transport")
const links = new Metrics.Labels("state")
const reloads = new Metrics.Labels2("store", "result")

/**
 * Count one open connection on `transport` (`alknet_connections`) until the scope closes or, when given, `closed`
 * completes — whichever comes first.
 */
export const trackConnection = (transport: Transport, closed?: Effect.Effect<void>): Effect.Effect<void, never, Scope.Scope> =>
  Effect.suspend(() => {
    const labels = transports.get(transport)
    let open = false
    const down = Effect.sync(() => {
      if (!open) return
      open = false
      Metrics.connections.unsafeModify(-1, labels)
    })
    const up = Effect.acquireRelease(
      Effect.sync(() => {
        open = true
        Metrics.connections.unsafeModify(1, labels)
      }),
      () => down
    )
    return closed === undefined ? up : Effect.zipRight(up, Effect.asVoid(Effect.forkScoped(Effect.zipRight(closed, down))))
  })

/** One failed authentication (`alknet_auth_failures_total`): a token that resolves to nobody, a refused key. */
export const countAuthFailure = (transport: Transport): void =>
  Metrics.authFailures.unsafeUpdate(1, transports.get(transport))

/** One reload of a live store (`alknet_store_reloads_total`): `ok`, or `failed` (the previous state stays). */
export const countReload = (store: Store, ok: boolean): void =>
  Metrics.storeReloads.unsafeUpdate(1, reloads.get(store, ok ? "ok" : "failed"))

/** One outbound link's place in `alknet_peer_links{state}`: it is counted in exactly one state until `close`. */
export interface LinkState {
  /** Move the link to `state` (no change when it is already there; nothing after `close`). */
  readonly set: (state: string) => void
  /** Stop counting the link (idempotent). */
  readonly close: () => void
}

/** A link not counted in any state yet. */
export const makeLinkState = (): LinkState => {
  let current: string | undefined
  let closed = false
  const move = (next: string | undefined) => {
    if (next === current) return
    if (current !== undefined) Metrics.peerLinks.unsafeModify(-1, links.get(current))
    if (next !== undefined) Metrics.peerLinks.unsafeModify(1, links.get(next))
    current = next
  }
  return {
    set: (state) => {
      if (!closed) move(state)
    },
    close: () => {
      if (closed) return
      move(undefined)
      closed = true
    }
  }
}
