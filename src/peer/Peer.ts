/**
 * Peers on the wire (SPEC §9): connections that feed a `PeerCompositeEnv`.
 *
 * - `connect(graph, { peerId, address, … })`: an outbound link to a known peer, dialed through the `Dialer` in
 *   context (QUIC or WebSocket, chosen by layer). It connects, imports the peer's
 *   operations with `from_call` into the peer's overlay (which lives in that connection's scope), serves the graph's
 *   operations back over the same connection, and when the connection drops it reconnects with backoff (an Effect
 *   `Schedule`, reset after each successful connection) and imports again. While it is down, calls routed to the
 *   peer fail at once with INTERNAL `peer {id} is not connected`; calls in flight when it dropped fail with INTERNAL
 *   `connection closed`. Closing the link's scope stops it.
 * - `accept(graph, { authenticator })`: the `onConnection` of a served connection: a caller that resolves to an
 *   identity and serves operations is a peer (PeerId = `Identity.id`); they are imported for its connection's life.
 * - `serveOptions(graph, options)`: `CallProtocol.ServeOptions` wired to the graph (source, env, accept).
 */
import { Cause, Deferred, Effect, FiberId, Option, Schedule } from "effect"
import type { Duration, Scope } from "effect"
import type * as Connection from "../call/Connection.js"
import type { OperationSource } from "../call/Dispatcher.js"
import * as CallClient from "../services/CallClient.js"
import type * as CallProtocol from "../services/CallProtocol.js"
import type { PeerId, Service } from "../services/PeerCompositeEnv.js"
import { fromCall } from "./FromCall.js"
import type { FromCallOptions } from "./FromCall.js"

export * as Composite from "./Composite.js"
export * as FromCall from "./FromCall.js"
export { fromCall } from "./FromCall.js"

/** The overlay slot of a peer's call connection: a newer connection of the same peer replaces the older's imports. */
export const SLOT = "call"

/** Default backoff: 100 ms doubling to at most 5 s, jittered. */
export const defaultBackoff: Schedule.Schedule<unknown> = Schedule.exponential("100 millis").pipe(
  Schedule.union(Schedule.spaced("5 seconds")),
  Schedule.jittered
)

export interface ConnectOptions {
  /** The peer's logical id (its `PeerEntry.peer_id`): the key of its overlay. */
  readonly peerId: PeerId
  /** `quic://HOST:PORT`, `ws://…`, `wss://…` */
  readonly address: string
  /** Our TLS identity, token, and the peer's expected fingerprint. */
  readonly credentials?: CallClient.Credentials
  /** Resolves the peer's identity for the calls it makes to us. */
  readonly authenticator?: CallProtocol.Authenticator
  /** Failed tokens in the peer's calls to us before the connection is closed (default 5; it is then reconnected). */
  readonly maxAuthAttempts?: number | Effect.Effect<number>
  /** What we serve the peer (default: the graph's `source`). */
  readonly serve?: OperationSource
  /** How the peer's operations are imported. */
  readonly import?: FromCallOptions
  /** Delay between attempts (default `defaultBackoff`); when it ends, the link gives up. */
  readonly schedule?: Schedule.Schedule<unknown, unknown>
  /** Give up one connection attempt after this long (default 10 s). */
  readonly connectTimeout?: Duration.DurationInput
  /** Told of every change of the link's status (after its counters are updated), e.g. to keep a gauge in step. */
  readonly onStatus?: (link: Link) => void
}

export type LinkStatus = "connecting" | "connected" | "backoff" | "stopped"

/** A managed link to a peer. */
export interface Link {
  readonly peerId: PeerId
  readonly status: () => LinkStatus
  /** The live connection, waiting for one while the peer is away. */
  readonly connection: Effect.Effect<CallClient.ClientConnection>
  /** How many times a connection was established and imported. */
  readonly connections: () => number
  /** Why the last attempt or connection ended, if it did. */
  readonly lastError: () => Option.Option<string>
  /** Failures since the last connection was established: its loss, then each attempt that failed. */
  readonly failedAttempts: () => number
}

/** Open a reconnecting link to a known peer for the life of the scope. */
export const connect = (
  graph: Service,
  options: ConnectOptions
): Effect.Effect<Link, never, Scope.Scope | CallClient.Dialer> =>
  Effect.gen(function*() {
    let status: LinkStatus = "connecting"
    let connections = 0
    let failedAttempts = 0
    let lastError: Option.Option<string> = Option.none()
    let ready = Deferred.unsafeMake<CallClient.ClientConnection>(FiberId.none)
    const driver = yield* Schedule.driver(options.schedule ?? defaultBackoff)
    const label = `peer ${options.peerId}`
    const setStatus = (next: LinkStatus) => {
      status = next
      options.onStatus?.(link)
    }

    const session = Effect.scoped(Effect.gen(function*() {
      setStatus("connecting")
      const connection = yield* CallClient.connect(options.address, options.credentials ?? {}, {
        source: options.serve ?? graph.source,
        extendEnv: graph.extendEnv,
        ...(options.authenticator === undefined ? {} : { authenticator: options.authenticator }),
        ...(options.maxAuthAttempts === undefined ? {} : { maxAuthAttempts: options.maxAuthAttempts }),
        ...(options.connectTimeout === undefined ? {} : { connectTimeout: options.connectTimeout })
      })
      yield* graph.attach(options.peerId, fromCall(connection, { label, ...options.import }), { slot: SLOT })
      connections++
      failedAttempts = 0
      lastError = Option.none() // connected again: the last failure is history, not news
      setStatus("connected")
      yield* driver.reset
      yield* Deferred.succeed(ready, connection)
      yield* connection.closed
      lastError = Option.some("connection closed")
      failedAttempts++
    }))

    const loop = Effect.gen(function*() {
      while (true) {
        const exit = yield* Effect.exit(session)
        if (exit._tag === "Failure") {
          const failure = Cause.failureOption(exit.cause)
          lastError = Option.some(Option.isSome(failure) ? failure.value.message : "connection failed")
          failedAttempts++
          yield* Effect.logDebug(`${label}: ${Option.getOrElse(lastError, () => "")}`)
        }
        if (yield* Deferred.isDone(ready)) ready = Deferred.unsafeMake<CallClient.ClientConnection>(FiberId.none)
        setStatus("backoff")
        const next = yield* Effect.option(driver.next(undefined))
        if (Option.isNone(next)) break
      }
      setStatus("stopped")
    })
    const link: Link = {
      peerId: options.peerId,
      status: () => status,
      connection: Effect.suspend(() => Deferred.await(ready)),
      connections: () => connections,
      lastError: () => lastError,
      failedAttempts: () => failedAttempts
    }
    yield* Effect.forkScoped(Effect.onExit(loop, () => Effect.sync(() => setStatus("stopped"))))
    return link
  })

export interface AcceptOptions {
  /** Resolves who connected: an identity makes it a peer (PeerId = `Identity.id`). */
  readonly authenticator: CallProtocol.Authenticator
  /** How its operations are imported. */
  readonly import?: FromCallOptions
  /** Which identities are peers whose operations we import (default: every identified caller). */
  readonly isPeer?: (id: PeerId) => boolean
}

/** `ServeOptions.onConnection`: import the operations of a peer that connected to us, for its connection's life. */
export const accept = (graph: Service, options: AcceptOptions) =>
(connection: Connection.Connection, info: CallProtocol.ConnectionInfo): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function*() {
    if (Option.isNone(info.peerFingerprint)) return
    const identity = yield* options.authenticator.resolveFingerprint(info.peerFingerprint.value)
    if (Option.isNone(identity)) return
    const peerId = identity.value.id
    if (options.isPeer !== undefined && !options.isPeer(peerId)) return
    const adapter = fromCall(connection, { label: `peer ${peerId}`, ...options.import })
    // A caller that serves nothing (a CLI, a plain client) is not a peer: no overlay for it.
    yield* adapter.import().pipe(
      Effect.flatMap((registrations) =>
        registrations.length === 0 ? Effect.void : graph.add(peerId, registrations, { slot: SLOT })
      ),
      Effect.catchAll((error) => Effect.logWarning(`peer ${peerId}: import failed: ${error.message}`))
    )
  })

/** Serve options wired to the graph: its source, its env for every handler, and `accept` for incoming peers. */
export const serveOptions = (
  graph: Service,
  options: Omit<CallProtocol.ServeOptions, "source" | "extendEnv" | "onConnection"> & {
    readonly authenticator: CallProtocol.Authenticator
    readonly import?: FromCallOptions
  }
): CallProtocol.ServeOptions => {
  const { import: importOptions, ...rest } = options
  return {
    ...rest,
    source: graph.source,
    extendEnv: graph.extendEnv,
    onConnection: accept(graph, { authenticator: options.authenticator, ...(importOptions === undefined ? {} : { import: importOptions }) })
  }
}
