/**
 * The per-IP connection limit from the live dynamic config (SPEC §11), enforced when a connection is accepted:
 * `max_connections_per_ip` (default 100): {@link Service.acquireConnection} takes a permit for the remote IP for the
 * lifetime of a scope (the connection's); over the limit it refuses with `ConnectionLimitExceeded`.
 *
 * The other limit, `max_auth_attempts`, is enforced by the call engine itself (`CallConnection` option
 * `maxAuthAttempts`, which the node reads from the same live config): it counts a connection's failed tokens and
 * closes the connection at the limit.
 *
 * Limits are read at the moment of each check, so a config reload applies to the next connection or attempt;
 * connections already admitted are not closed when a limit is lowered.
 */
import { Context, Data, Effect, Layer } from "effect"
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

export interface Service {
  /** Hold a connection permit for `ip` until the scope closes; refuse if the IP is at its limit. */
  readonly acquireConnection: (ip: string) => Effect.Effect<void, ConnectionLimitExceeded, Scope.Scope>
  /** Connections currently held for `ip`. */
  readonly connections: (ip: string) => Effect.Effect<number>
}

export class RateLimiter extends Context.Tag("alknet/RateLimiter")<RateLimiter, Service>() {}

/** `::ffff:10.0.0.1` (IPv4 on a dual-stack socket) counts as `10.0.0.1`. */
export const normalizeIp = (ip: string): string => ip.startsWith("::ffff:") && ip.includes(".") ? ip.slice(7) : ip

export const make: Effect.Effect<Service, never, NodeConfig> = Effect.gen(function*() {
  const config = yield* NodeConfig
  const limits = Effect.map(config.dynamic, (dynamic) => dynamic.rate_limits)
  const open = new Map<string, number>()

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

  return RateLimiter.of({
    acquireConnection,
    connections: (ip) => Effect.sync(() => open.get(normalizeIp(ip)) ?? 0)
  })
})

export const layer: Layer.Layer<RateLimiter, never, NodeConfig> = Layer.effect(RateLimiter, make)
