/**
 * The `alknet/call` protocol on an accepted connection, whatever carries it (SPEC §4–§5, §10):
 *
 * - `handler(options)`: the `ProtocolHandler` an `Endpoint` registers for ALPN `alknet/call` (QUIC: one
 *   bidirectional stream per call, framed);
 * - `webSocketHandler(options)`: the same for a WebSocket listener (one envelope per binary message).
 *
 * Both run the same engine (`call/Connection`) with the same identity rules (the protocol's policy, `identify`: the
 * engine only routes and runs):
 *
 * - the connection's identity is its TLS fingerprint resolved through the `Authenticator` — re-resolved on every
 *   request, so a peer added, changed or disabled while the connection is up applies to its next call; over
 *   WebSocket a bearer token on the upgrade, when it resolves, is the connection's identity instead;
 * - a request's `auth_token` that resolves replaces the connection identity for that request only; one that does not
 *   falls back to it and counts as a failed attempt: at `maxAuthAttempts` the connection is closed;
 * - an optional connection gate (`admit`, e.g. the per-IP connection limit) runs before anything is served;
 * - `onAuthFailure` hears of every failed authentication (an upgrade bearer token that resolves to nobody, once per
 *   connection; each request `auth_token` that resolves to nobody), e.g. to count failures per remote address.
 *
 * The connection is symmetric: `onConnection` receives the engine connection, so the node can call back the peer
 * that called it (the peer graph uses this).
 */
import { Duration, Effect, Option } from "effect"
import type { Redacted, Scope } from "effect"
import * as Connection from "../call/Connection.js"
import type { OperationSource } from "../call/Dispatcher.js"
import * as StreamTransport from "../call/StreamTransport.js"
import type { CallTransport } from "../call/Transport.js"
import * as NodeMetrics from "../observability/NodeMetrics.js"
import type { Identity } from "../schema/Identity.js"
import type { Address, ProtocolHandler } from "./Endpoint.js"

/** The ALPN of the call protocol. */
export const ALPN = "alknet/call"

/** Resolves who is calling. An `IdentityProvider` is one. */
export interface Authenticator {
  readonly resolveFingerprint: (fingerprint: string) => Effect.Effect<Option.Option<Identity>>
  readonly resolveToken: (token: Redacted.Redacted<string>) => Effect.Effect<Option.Option<Identity>>
}

/** What a served connection looks like from the outside, for `admit` and `onConnection`. */
export interface ConnectionInfo {
  readonly transport: "quic" | "ws" | "memory"
  readonly remoteAddress: Address
  readonly peerFingerprint: Option.Option<string>
}

export interface ServeOptions {
  /** The operations served (the registry, or the peer graph's composed source). */
  readonly source: OperationSource
  /** Resolves fingerprints and tokens (default: nobody is identified). */
  readonly authenticator?: Authenticator
  /** Failed token resolutions before the connection is closed (default 5; read live on each failure). */
  readonly maxAuthAttempts?: number | Effect.Effect<number>
  /** Default deadline of incoming calls (default 30 s). */
  readonly defaultTimeout?: Duration.DurationInput
  /** Largest frame / message, in bytes (default 64 MiB). */
  readonly maxFrameBytes?: number
  /**
   * Gate run before serving, in the connection's scope (e.g. take a per-IP permit held for the connection's life).
   * A failure refuses the connection: it is logged and closed.
   */
  readonly admit?: (
    info: ConnectionInfo
  ) => Effect.Effect<void, { readonly message: string; /** the gate logged it already */ readonly logged?: boolean }, Scope.Scope>
  /**
   * Called on every failed authentication on the connection: the WebSocket upgrade's bearer token resolving to nobody
   * (once, when the connection starts) and each request `auth_token` resolving to nobody (e.g. the node counts them per
   * remote address: `RateLimiter.recordAuthFailure`).
   */
  readonly onAuthFailure?: (info: ConnectionInfo) => Effect.Effect<void>
  /** Extend every handler's `ctx.env` (the peer graph adds its routing and `invokePeer`; see `Dispatcher.Options`). */
  readonly extendEnv?: Connection.Options["extendEnv"]
  /** Runs alongside the served connection (e.g. to import the peer's operations or call it back). */
  readonly onConnection?: (connection: Connection.Connection, info: ConnectionInfo) => Effect.Effect<void, never, Scope.Scope>
  /** What one caller may ask of this node (defaults: `defaultLimits`). Read when a connection starts. */
  readonly limits?: Partial<Limits> | Effect.Effect<Partial<Limits>>
}

/** Bounds a caller cannot exceed (README, configuration: `rate_limits`). */
export interface Limits {
  /** Calls served at once on one connection; past it a request is answered `OVERLOADED` (retryable). */
  readonly maxInFlightPerConnection: number
  /** Calls served at once for one caller (an identity, or an anonymous remote address) across its connections. */
  readonly maxInFlightPerCaller: number
  /** The largest deadline a caller may ask for with `timeout_ms`, in ms. */
  readonly maxCallTimeoutMs: number
  /** Deadline of subscriptions served to anonymous callers, in ms. */
  readonly anonymousSubscriptionTimeoutMs: number
}

export const defaultLimits: Limits = {
  maxInFlightPerConnection: 256,
  maxInFlightPerCaller: 1024,
  maxCallTimeoutMs: 10 * 60_000,
  anonymousSubscriptionTimeoutMs: 10 * 60_000
}

const none = Effect.succeed(Option.none<Identity>())

export interface IdentifyOptions {
  /** The connection's identity (e.g. its TLS fingerprint resolved), evaluated per request (default: none). */
  readonly identity?: Option.Option<Identity> | Effect.Effect<Option.Option<Identity>>
  /** Resolves a request's bearer token (default: tokens are ignored). */
  readonly resolveToken?: (token: Redacted.Redacted<string>) => Effect.Effect<Option.Option<Identity>>
  /** Failed token resolutions before the connection is closed (default 5; an Effect is read on every failure). */
  readonly maxAuthAttempts?: number | Effect.Effect<number>
  /** Told of every failed token resolution (e.g. to count failures per remote address). */
  readonly onAuthFailure?: () => void
}

/**
 * The identity policy of one connection (SPEC §5 step 2, §10–§11): a request's `auth_token` that resolves replaces
 * the connection's identity for that request only; one that does not falls back to it and counts as a failed attempt;
 * at `maxAuthAttempts` failures the connection is closed.
 */
export const identify = (options: IdentifyOptions): Connection.Identify => {
  const connectionIdentity: Effect.Effect<Option.Option<Identity>> = options.identity === undefined
    ? none
    : Option.isOption(options.identity)
    ? Effect.succeed(options.identity)
    : options.identity
  const resolveToken = options.resolveToken
  if (resolveToken === undefined) return () => connectionIdentity
  const maxAuthAttempts: Effect.Effect<number> = typeof options.maxAuthAttempts === "number"
    ? Effect.succeed(options.maxAuthAttempts)
    : options.maxAuthAttempts ?? Effect.succeed(5)
  let failures = 0
  return (token) =>
    token === undefined ? connectionIdentity : Effect.flatMap(resolveToken(token), (resolved) => {
      if (Option.isSome(resolved)) return Effect.succeed(resolved)
      failures++
      options.onAuthFailure?.()
      return Effect.flatMap(maxAuthAttempts, (max) =>
        failures >= max
          ? Effect.fail(new Connection.CloseConnection({ reason: `${failures} failed authentication attempts` }))
          : connectionIdentity)
    })
}

/**
 * Calls in flight per caller — an identity, else an anonymous remote address — shared by everything served with the
 * same `ServeOptions` (every connection, QUIC and WebSocket, and the HTTP gateway of a node), so one caller has one
 * `maxInFlightPerCaller` limit whichever way it calls.
 */
export interface CallerAdmission {
  /**
   * Take one slot for this caller, or `undefined` when it already has `max` calls in flight; the returned function
   * gives the slot back (once; later calls do nothing).
   */
  readonly acquire: (identity: Option.Option<Identity>, remoteHost: string, max: number) => (() => void) | undefined
  /** The caller's calls in flight right now. */
  readonly inFlight: (identity: Option.Option<Identity>, remoteHost: string) => number
}

const callerAdmissions = new WeakMap<ServeOptions, CallerAdmission>()

const callerKey = (identity: Option.Option<Identity>, remoteHost: string) =>
  Option.isSome(identity) ? `id:${identity.value.id}` : `anonymous:${remoteHost}`

/** A fresh per-caller in-flight counter. */
export const makeCallerAdmission = (): CallerAdmission => {
  const table = new Map<string, number>()
  return {
    acquire: (identity, remoteHost, max) => {
      const key = callerKey(identity, remoteHost)
      const current = table.get(key) ?? 0
      if (current >= max) return undefined
      table.set(key, current + 1)
      let released = false
      return () => {
        if (released) return
        released = true
        const left = (table.get(key) ?? 1) - 1
        if (left <= 0) table.delete(key)
        else table.set(key, left)
      }
    },
    inFlight: (identity, remoteHost) => table.get(callerKey(identity, remoteHost)) ?? 0
  }
}

/** The per-caller in-flight counter of everything served with `options`: the same object for the same options. */
export const callerAdmission = (options: ServeOptions): CallerAdmission => {
  const existing = callerAdmissions.get(options)
  if (existing !== undefined) return existing
  const admission = makeCallerAdmission()
  callerAdmissions.set(options, admission)
  return admission
}

const admitCaller = (options: ServeOptions, info: ConnectionInfo, max: number) => {
  const admission = callerAdmission(options)
  return (identity: Option.Option<Identity>): (() => void) | undefined =>
    admission.acquire(identity, info.remoteAddress.host, max)
}

/** Serve the call protocol on one transport until it closes. */
export const serve = (
  transport: CallTransport,
  info: ConnectionInfo,
  options: ServeOptions,
  upgradeToken: Option.Option<Redacted.Redacted<string>> = Option.none()
): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function*() {
    if (options.admit !== undefined) {
      const admitted = yield* Effect.either(options.admit(info))
      if (admitted._tag === "Left") {
        if (admitted.left.logged !== true) yield* Effect.logWarning(`connection refused: ${admitted.left.message}`)
        return yield* transport.close
      }
    }
    yield* NodeMetrics.trackConnection(info.transport)
    const authenticator = options.authenticator
    const onAuthFailure = options.onAuthFailure
    const authFailed = Effect.zipRight(
      Effect.sync(() => NodeMetrics.countAuthFailure(info.transport)),
      onAuthFailure === undefined ? Effect.void : onAuthFailure(info)
    )
    const resolveToken = authenticator === undefined
      ? undefined
      : (token: Redacted.Redacted<string>) =>
        Effect.tap(authenticator.resolveToken(token), (resolved) => Option.isNone(resolved) ? authFailed : Effect.void)
    if (authenticator !== undefined && Option.isSome(upgradeToken)) {
      if (Option.isNone(yield* authenticator.resolveToken(upgradeToken.value))) yield* authFailed
    }
    const byFingerprint = authenticator === undefined || Option.isNone(info.peerFingerprint)
      ? none
      : authenticator.resolveFingerprint(info.peerFingerprint.value)
    const identity = authenticator === undefined || Option.isNone(upgradeToken)
      ? byFingerprint
      : Effect.flatMap(
        authenticator.resolveToken(upgradeToken.value),
        (resolved) => (Option.isSome(resolved) ? Effect.succeed(resolved) : byFingerprint)
      )
    const limits: Limits = {
      ...defaultLimits,
      ...(options.limits === undefined ? {} : Effect.isEffect(options.limits) ? yield* options.limits : options.limits)
    }
    const connection = yield* Connection.make(transport, {
      source: options.source,
      identify: identify({
        identity,
        ...(resolveToken === undefined ? {} : { resolveToken }),
        ...(options.maxAuthAttempts === undefined ? {} : { maxAuthAttempts: options.maxAuthAttempts })
      }),
      maxInFlight: limits.maxInFlightPerConnection,
      admit: admitCaller(options, info, limits.maxInFlightPerCaller),
      maxTimeout: Duration.millis(limits.maxCallTimeoutMs),
      anonymousSubscriptionTimeout: Duration.millis(limits.anonymousSubscriptionTimeoutMs),
      ...(options.defaultTimeout === undefined ? {} : { defaultTimeout: options.defaultTimeout }),
      ...(options.extendEnv === undefined ? {} : { extendEnv: options.extendEnv })
    })
    if (options.onConnection !== undefined) yield* Effect.forkScoped(options.onConnection(connection, info))
    yield* connection.closed
  }).pipe(
    Effect.annotateLogs({
      transport: info.transport,
      remote: `${info.remoteAddress.host}:${info.remoteAddress.port}`
    })
  )

/**
 * The protocol handler to register on an `Endpoint` under `ALPN`; `transport` names what carries it (in logs and the
 * `alknet_connections` metric; default `quic`).
 */
export const handler = (options: ServeOptions, transport: "quic" | "memory" = "quic"): ProtocolHandler => (connection) =>
  serve(
    StreamTransport.make(connection, options.maxFrameBytes === undefined ? {} : { maxFrameBytes: options.maxFrameBytes }),
    { transport, remoteAddress: connection.remoteAddress, peerFingerprint: connection.peerFingerprint },
    options
  )

/** A WebSocket connection a listener accepted (what `layers/ws/WebSocket.listen` hands its `onConnection`). */
export interface WebSocketAccepted {
  readonly transport: CallTransport
  readonly remoteAddress: Address
  /** The client's TLS fingerprint, when it presented a certificate (wss only). */
  readonly peerFingerprint: Option.Option<string>
  /** The bearer token of the upgrade request's `Authorization` header. */
  readonly bearerToken: Option.Option<Redacted.Redacted<string>>
}

/** The connection handler for a WebSocket listener (`layers/ws/WebSocket.listen`). */
export const webSocketHandler = (options: ServeOptions) => (accepted: WebSocketAccepted): Effect.Effect<void, never, Scope.Scope> =>
  serve(
    accepted.transport,
    { transport: "ws", remoteAddress: accepted.remoteAddress, peerFingerprint: accepted.peerFingerprint },
    options,
    accepted.bearerToken
  )
