/**
 * SSH as the node composition reaches it: `handlers(config, …)` loads `ssh2` (through `./SshServer.ts`) only when a
 * node serves SSH. Outside this folder, import `./SshServer.js` / `./SshClient.js` for types only, or load them
 * dynamically like this module does.
 */
import { Duration, Effect } from "effect"
import type { VaultError } from "../../errors/VaultError.js"
import type { SshConfig } from "../../schema/Config.js"
import type { Authenticator } from "../../services/CallProtocol.js"
import type { Connection, ProtocolHandler } from "../../services/Endpoint.js"
import type * as RateLimit from "../../services/RateLimit.js"
import type * as Vault from "../../services/Vault.js"

/** The ALPN SSH is served under (also `SshServer.ALPN`). */
export const ALPN = "alknet/ssh"

/**
 * The `alknet/ssh` handler of a node: host key from the vault (`host_key_path`), client keys resolved by the node's
 * `authenticator` (the same providers as callers, live), refused keys counted by the per-address auth-failure
 * limiter, and each connection gated like a call connection (blocked addresses, connections per IP).
 */
export const handlers = (
  ssh: SshConfig,
  authenticator: Authenticator,
  limiter: RateLimit.Service
): Effect.Effect<Record<string, ProtocolHandler>, VaultError, Vault.Vault> =>
  Effect.gen(function*() {
    const SshServer = yield* Effect.promise(() => import("./SshServer.js"))
    const Keys = yield* Effect.promise(() => import("./Keys.js"))
    const hostKey = yield* Keys.fromVault(ssh.host_key_path)
    const serve = SshServer.handler({
      hostKey,
      resolve: authenticator.resolveFingerprint,
      policy: Effect.succeed({
        commands: ssh.commands,
        forward: ssh.forward,
        maxSessionsPerIdentity: ssh.max_sessions_per_identity,
        idleTimeoutMs: ssh.idle_timeout_ms
      }),
      authTimeout: Duration.millis(ssh.auth_timeout_ms),
      onAuthFailure: (connection) => limiter.recordAuthFailure(connection.remoteAddress.host)
    })
    yield* Effect.logInfo(`ssh host key ${hostKey.fingerprint} (${ssh.host_key_path})`)
    const host = (connection: Connection) => connection.remoteAddress.host
    return {
      [ALPN]: (connection) =>
        Effect.zipRight(
          Effect.zipRight(limiter.checkAddress(host(connection)), limiter.acquireConnection(host(connection))),
          serve(connection)
        ).pipe(Effect.catchAll((refused) => Effect.logWarning(`ssh connection refused: ${refused.message}`)))
    }
  })
