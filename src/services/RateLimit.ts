/**
 * Connection and authentication limits from the live dynamic config (SPEC §11), enforced by the endpoint and the
 * call engine:
 *
 * - `max_connections_per_ip` (default 100): {@link Service.acquireConnection} takes a permit for the remote IP for
 *   the lifetime of a scope (the connection's); over the limit it refuses with `ConnectionLimitExceeded`.
 * - `max_auth_attempts` (default 5): each connection gets an {@link AuthGuard}; a bearer token that resolves to
 *   nothing counts as a failed attempt, and the attempt that reaches the limit fails with `AuthAttemptsExceeded` —
 *   the caller then closes the connection. A successful resolution does not reset the count (interleaving a valid
 *   token must not buy a brute-forcer more guesses).
 *
 * Limits are read at the moment of each check, so a config reload applies to the next connection or attempt;
 * connections already admitted are not closed when a limit is lowered.
 */
import { Context, Data, Effect, Layer, Option } from "effect"
import type { Redacted, Scope } from "effect"
import type { Identity } from "../schema/Identity.js"
import { IdentityProvider } from "./IdentityProvider.js"
import { NodeConfig } from "./NodeConfig.js"

export class ConnectionLimitExceeded extends Data.TaggedError("ConnectionLimitExceeded")<{
  readonly ip: string
  readonly limit: number
}> {
  override get message() {
    return `too many connections from ${this.ip} (limit ${this.limit})`
  }
}

export class AuthAttemptsExceeded extends Data.TaggedError("AuthAttemptsExceeded")<{ readonly limit: number }> {
  override get message() {
    return `too many failed authentication attempts on this connection (limit ${this.limit})`
  }
}

/** One connection's failed-authentication counter. */
export interface AuthGuard {
  /**
   * Resolve a request's bearer token. `None` (the request falls back to the connection's identity) counts as a
   * failure; the failure that reaches the limit, and every attempt after it, fails with `AuthAttemptsExceeded`.
   */
  readonly resolveToken: (
    token: Redacted.Redacted<string>
  ) => Effect.Effect<Option.Option<Identity>, AuthAttemptsExceeded>
  /** Failed attempts so far. */
  readonly failures: Effect.Effect<number>
}

export interface Service {
  /** Hold a connection permit for `ip` until the scope closes; refuse if the IP is at its limit. */
  readonly acquireConnection: (ip: string) => Effect.Effect<void, ConnectionLimitExceeded, Scope.Scope>
  /** Connections currently held for `ip`. */
  readonly connections: (ip: string) => Effect.Effect<number>
  /** A fresh counter for a new connection. */
  readonly authGuard: Effect.Effect<AuthGuard>
}

export class RateLimiter extends Context.Tag("alknet/RateLimiter")<RateLimiter, Service>() {}

/** `::ffff:10.0.0.1` (IPv4 on a dual-stack socket) counts as `10.0.0.1`. */
export const normalizeIp = (ip: string): string => ip.startsWith("::ffff:") && ip.includes(".") ? ip.slice(7) : ip

export const make: Effect.Effect<Service, never, NodeConfig | IdentityProvider> = Effect.gen(function*() {
  const config = yield* NodeConfig
  const identities = yield* IdentityProvider
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

  const authGuard = Effect.sync((): AuthGuard => {
    let failures = 0
    // Attempts still resolving count against the limit, so concurrent requests cannot overshoot it.
    let pending = 0
    return {
      failures: Effect.sync(() => failures),
      resolveToken: (token) =>
        Effect.flatMap(limits, ({ max_auth_attempts: limit }) => {
          if (failures + pending >= limit) return Effect.fail(new AuthAttemptsExceeded({ limit }))
          pending += 1
          return identities.resolveToken(token).pipe(
            Effect.ensuring(Effect.sync(() => void (pending -= 1))),
            Effect.flatMap((identity): Effect.Effect<Option.Option<Identity>, AuthAttemptsExceeded> => {
              if (Option.isSome(identity)) return Effect.succeed(identity)
              failures += 1
              return failures >= limit ? Effect.fail(new AuthAttemptsExceeded({ limit })) : Effect.succeed(identity)
            })
          )
        })
    }
  })

  return RateLimiter.of({
    acquireConnection,
    connections: (ip) => Effect.sync(() => open.get(normalizeIp(ip)) ?? 0),
    authGuard
  })
})

export const layer: Layer.Layer<RateLimiter, never, NodeConfig | IdentityProvider> = Layer.effect(RateLimiter, make)
