/**
 * SSH as the node composition reaches it: `handlers(config, …)` loads `ssh2` (through `./SshServer.ts`) only when a
 * node serves SSH. Outside this folder, import `./SshServer.js` / `./SshClient.js` for types only, or load them
 * dynamically like this module does.
 */
import { Duration, Effect } from "effect"
import type { VaultError } from "../../errors/VaultError.js"
import type { SshConfig } from "../../schema/Config.js"
import type { Authenticator } from "../../services/CallProtocol.js"
import type { ProtocolHandler } from "../../services/Endpoint.js"
import type { EndpointError } from "../../errors/EndpointError.js"
import type * as SshServerModule from "./SshServer.js"
import type { Scope } from "effect"
import type * as RateLimit from "../../services/RateLimit.js"
import type * as Vault from "../../services/Vault.js"

/** The ALPN SSH is served under (also `SshServer.ALPN`). */
export const ALPN = "alknet/ssh"

/**
 * The `alknet/ssh` handler of a node: host key from the vault (`host_key_path`), client keys resolved by the node's
 * `authenticator` (the same providers as callers, live), refused keys counted by the per-address auth-failure
 * limiter, and each connection gated like a call connection (blocked addresses, connections per IP). With
 * `ssh.listen` it also listens on plain TCP for stock SSH clients, for the scope's life.
 */
export const handlers = (
  ssh: SshConfig,
  authenticator: Authenticator,
  limiter: RateLimit.Service
): Effect.Effect<Record<string, ProtocolHandler>, VaultError | EndpointError, Vault.Vault | Scope.Scope> =>
  Effect.gen(function*() {
    const SshServer = yield* Effect.promise(() => import("./SshServer.js"))
    const Keys = yield* Effect.promise(() => import("./Keys.js"))
    const hostKey = yield* Keys.fromVault(ssh.host_key_path)
    const options: SshServerModule.ServerOptions = {
      hostKey,
      resolve: authenticator.resolveFingerprint,
      policy: Effect.succeed({
        commands: ssh.commands,
        forward: ssh.forward,
        maxSessionsPerIdentity: ssh.max_sessions_per_identity,
        idleTimeoutMs: ssh.idle_timeout_ms
      }),
      authTimeout: Duration.millis(ssh.auth_timeout_ms),
      onAuthFailure: limiter.recordAuthFailure,
      admit: (host) => Effect.zipRight(limiter.checkAddress(host), limiter.acquireConnection(host))
    }
    yield* Effect.logInfo(`ssh host key ${hostKey.fingerprint} (${ssh.host_key_path})`)
    if (ssh.listen !== undefined) {
      const bound = yield* SshServer.listen({ ...options, host: ssh.listen.host, port: ssh.listen.port })
      yield* Effect.logInfo(`ssh listening on tcp ${bound.host}:${bound.port}`)
    }
    return { [ALPN]: SshServer.handler(options) }
  })
