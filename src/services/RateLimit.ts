/**
 * Per-address limits from the live dynamic config (SPEC §11 `rate_limits`), checked when a connection is accepted:
 *
 * - `max_connections_per_ip` (default 100): {@link Service.acquireConnection} takes a permit for the remote IP for the
 *   lifetime of a scope (the connection's); over the limit it refuses with `ConnectionLimitExceeded`.
 * - Failed authentications per address: {@link Service.recordAuthFailure} counts each bearer token that resolved to
 *   nobody (on a WebSocket upgrade, or a request's `auth_token`). When an address reaches `max_auth_failures_per_ip`
 *   (default 10) within a sliding window of `auth_failure_window_ms` (default 60 s), it is refused for `auth_block_ms`
 *   (default 5 min): {@link Service.checkAddress} fails with `AddressBlocked`, which the node turns into a refused
 *   connection (QUIC) or HTTP 429 before the upgrade (WebSocket). The block is logged once, when it starts. It refuses
 *   the address, not a credential: a well-behaved client from the same address is refused too until the cooldown
 *   ends. An IPv6 address counts with its /64 (one host usually holds a whole /64).
 *
 * The third limit, `max_auth_attempts`, is enforced by the call engine itself (`CallConnection` option
 * `maxAuthAttempts`, which the node reads from the same live config): it counts a connection's failed tokens and
 * closes the connection at the limit.
 *
 * Limits are read at the moment of each check, so a config reload applies to the next connection or attempt;
 * connections already admitted are not closed when a limit is lowered. Memory is bounded: at most
 * {@link MAX_TRACKED_ADDRESSES} addresses are tracked for failures (the least recently failing one is forgotten
 * first), each with at most `max_auth_failures_per_ip` timestamps.
 */
import { Clock, Context, Data, Effect, Layer } from "effect"
import type { Scope } from "effect"
import { NodeConfig } from "./NodeConfig.js"

export class ConnectionLimitExceeded extends Data.TaggedError("ConnectionLimitExceeded")<{
  readonly ip: string
  readonly limit: number
}> {
  override get message() {
    return `too many connections from ${this.ip} (limit ${this.limit})`
  }
}

/** The address is in its cooldown after too many failed authentications. */
export class AddressBlocked extends Data.TaggedError("AddressBlocked")<{
  /** The address as counted (an IPv6 address as its /64). */
  readonly address: string
  /** Until the cooldown ends. */
  readonly retryAfterMs: number
}> {
  override get message() {
    return `too many failed authentications from ${this.address}: refused for ${Math.ceil(this.retryAfterMs / 1000)} s`
  }
}

/** Addresses tracked for failed authentications at most; past it the least recently failing one is forgotten. */
export const MAX_TRACKED_ADDRESSES = 10_000

export interface Service {
  /** Hold a connection permit for `ip` until the scope closes; refuse if the IP is at its limit. */
  readonly acquireConnection: (ip: string) => Effect.Effect<void, ConnectionLimitExceeded, Scope.Scope>
  /** Connections currently held for `ip`. */
  readonly connections: (ip: string) => Effect.Effect<number>
  /**
   * Count a failed authentication from `ip` (a bearer token that resolved to nobody). The failure that reaches
   * `max_auth_failures_per_ip` within the window starts the address's cooldown and logs it (once per block).
   */
  readonly recordAuthFailure: (ip: string) => Effect.Effect<void>
  /** Fail with `AddressBlocked` while `ip` is in its cooldown. */
  readonly checkAddress: (ip: string) => Effect.Effect<void, AddressBlocked>
  /** Addresses currently tracked for failed authentications (failures in the window, or blocked). */
  readonly trackedAddresses: Effect.Effect<number>
}

export class RateLimiter extends Context.Tag("alknet/RateLimiter")<RateLimiter, Service>() {}

/** `::ffff:10.0.0.1` (IPv4 on a dual-stack socket) counts as `10.0.0.1`. */
export const normalizeIp = (ip: string): string => ip.startsWith("::ffff:") && ip.includes(".") ? ip.slice(7) : ip

/**
 * The key failed authentications are counted under: an IPv4 address as it is, an IPv6 address as its /64
 * (`2001:db8:0:1::/64`); anything that does not parse as IPv6 as it is.
 */
export const addressKey = (ip: string): string => {
  const address = normalizeIp(ip).split("%")[0]!
  if (!address.includes(":")) return address
  const halves = address.split("::")
  if (halves.length > 2) return address
  const groups = (text: string | undefined) => (text === undefined || text === "" ? [] : text.split(":"))
  const head = groups(halves[0])
  const tail = groups(halves[1])
  // An embedded IPv4 address (`::1.2.3.4`) fills the last two groups.
  const width = (list: ReadonlyArray<string>) => list.reduce((n, g) => n + (g.includes(".") ? 2 : 1), 0)
  const missing = 8 - width(head) - width(tail)
  if (halves.length === 1 ? missing !== 0 : missing < 1) return address
  const all = [...head, ...Array.from({ length: halves.length === 1 ? 0 : missing }, () => "0"), ...tail]
  const prefix = all.slice(0, 4)
  if (!prefix.every((g) => /^[0-9a-fA-F]{1,4}$/.test(g))) return address
  return `${prefix.map((g) => parseInt(g, 16).toString(16)).join(":")}::/64`
}

interface Failures {
  /** Times of the failures still in the window (at most the limit). */
  times: Array<number>
  /** The cooldown ends at this time (0: not blocked). */
  blockedUntil: number
}

export const make: Effect.Effect<Service, never, NodeConfig> = Effect.gen(function*() {
  const config = yield* NodeConfig
  const limits = Effect.map(config.dynamic, (dynamic) => dynamic.rate_limits)
  const open = new Map<string, number>()
  // Insertion order = least recently failing first (an entry is re-inserted on each failure).
  const failures = new Map<string, Failures>()

  const acquireConnection = (ip: string) => {
    const key = normalizeIp(ip)
    return Effect.acquireRelease(
      Effect.flatMap(limits, ({ max_connections_per_ip: limit }) =>
        Effect.suspend(() => {
          const held = open.get(key) ?? 0
          if (held >= limit) return Effect.fail(new ConnectionLimitExceeded({ ip: key, limit }))
          open.set(key, held + 1)
          return Effect.void
        })),
      () =>
        Effect.sync(() => {
          const held = (open.get(key) ?? 1) - 1
          if (held === 0) open.delete(key)
          else open.set(key, held)
        })
    )
  }

  /** Nothing left to remember: no failure in the window and no cooldown. */
  const stale = (entry: Failures, now: number, windowMs: number) =>
    entry.blockedUntil <= now && (entry.times.length === 0 || entry.times[entry.times.length - 1]! <= now - windowMs)

  const recordAuthFailure = (ip: string) =>
    Effect.flatMap(Effect.all([limits, Clock.currentTimeMillis]), ([limit, now]) => {
      const key = addressKey(ip)
      const windowMs = limit.auth_failure_window_ms
      // Forget the least recently failing address if it has nothing left to count (keeps the map small).
      const oldest = failures.entries().next()
      if (!oldest.done && oldest.value[0] !== key && stale(oldest.value[1], now, windowMs)) failures.delete(oldest.value[0])

      const entry = failures.get(key) ?? { times: [], blockedUntil: 0 }
      failures.delete(key)
      failures.set(key, entry)
      while (failures.size > MAX_TRACKED_ADDRESSES) failures.delete(failures.keys().next().value!)

      // A failure during the cooldown (on a connection admitted before it) starts nothing new.
      if (entry.blockedUntil > now) return Effect.void
      entry.times = entry.times.filter((t) => t > now - windowMs)
      entry.times.push(now)
      if (entry.times.length < limit.max_auth_failures_per_ip) return Effect.void
      entry.times = []
      entry.blockedUntil = now + limit.auth_block_ms
      return Effect.logWarning(
        `refusing ${key} for ${Math.ceil(limit.auth_block_ms / 1000)} s: ${limit.max_auth_failures_per_ip} failed ` +
          `authentications within ${Math.ceil(windowMs / 1000)} s`
      )
    })

  const checkAddress = (ip: string) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => {
      const key = addressKey(ip)
      const entry = failures.get(key)
      if (entry === undefined || entry.blockedUntil <= now) return Effect.void
      return Effect.fail(new AddressBlocked({ address: key, retryAfterMs: entry.blockedUntil - now }))
    })

  return RateLimiter.of({
    acquireConnection,
    connections: (ip) => Effect.sync(() => open.get(normalizeIp(ip)) ?? 0),
    recordAuthFailure,
    checkAddress,
    trackedAddresses: Effect.flatMap(Effect.all([limits, Clock.currentTimeMillis]), ([limit, now]) =>
      Effect.sync(() => {
        for (const [key, entry] of failures) if (stale(entry, now, limit.auth_failure_window_ms)) failures.delete(key)
        return failures.size
      }))
  })
})

export const layer: Layer.Layer<RateLimiter, never, NodeConfig> = Layer.effect(RateLimiter, make)
