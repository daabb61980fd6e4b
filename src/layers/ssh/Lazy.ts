/**
 * SSH over alknet as the rest of alknet and the package's users reach it (`Ssh` in `alknet`): `ssh2` (30–50 ms to
 * load) is loaded the first time a function here runs, so importing `alknet` or running a node without SSH never
 * loads it. Outside this folder, import `./SshServer.js` / `./SshClient.js` for types only and reach them through
 * this module.
 *
 * - `handler(options)`: the `alknet/ssh` protocol handler for an endpoint; `listen(options)`: a plain TCP listener
 *   for stock OpenSSH clients; `open(connection, options)`: a client session (exec, local forwards).
 * - `handlers(config, …)`: what the node composition registers when its config has an `ssh` object.
 */
import { Duration, Effect } from "effect"
import type { Scope } from "effect"
import type { EndpointError } from "../../errors/EndpointError.js"
import type { SshError } from "../../errors/SshError.js"
import type { VaultError } from "../../errors/VaultError.js"
import type { SshConfig } from "../../schema/Config.js"
import type { Authenticator } from "../../services/CallProtocol.js"
import type { Connection, ProtocolHandler } from "../../services/Endpoint.js"
import type * as RateLimit from "../../services/RateLimit.js"
import type * as Vault from "../../services/Vault.js"
import * as Keys from "./Keys.js"
import { ALPN } from "./Protocol.js"
import type * as SshClient from "./SshClient.js"
import type * as SshServer from "./SshServer.js"

export { ALPN, EXEC_SCOPE, FORWARD_SCOPE } from "./Protocol.js"
export type { ExecIo, ExitStatus, SessionOptions, SshSession } from "./SshClient.js"
export type { ListenOptions, Policy, ServerOptions } from "./SshServer.js"

const server = Effect.promise(() => import("./SshServer.js"))
const client = Effect.promise(() => import("./SshClient.js"))

/** The `alknet/ssh` protocol handler (register it under `ALPN`); `ssh2` loads with the first connection. */
export const handler = (options: SshServer.ServerOptions): ProtocolHandler => {
  let loaded: ProtocolHandler | undefined
  return (connection) =>
    Effect.suspend(() =>
      loaded !== undefined
        ? loaded(connection)
        : Effect.flatMap(server, (m) => {
          loaded ??= m.handler(options)
          return loaded(connection)
        })
    )
}

/** A plain TCP SSH listener for stock OpenSSH clients, for the scope's life. */
export const listen = (
  options: SshServer.ListenOptions
): Effect.Effect<{ readonly host: string; readonly port: number }, EndpointError, Scope.Scope> =>
  Effect.flatMap(server, (m) => m.listen(options))

/** Open an SSH session over a new stream of an `alknet/ssh` connection; it ends with the scope. */
export const open = (
  connection: Connection,
  options: SshClient.SessionOptions
): Effect.Effect<SshClient.SshSession, SshError, Scope.Scope> => Effect.flatMap(client, (m) => m.open(connection, options))

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
    const hostKey = yield* Keys.fromVault(ssh.host_key_path)
    const options: SshServer.ServerOptions = {
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
      const bound = yield* listen({ ...options, host: ssh.listen.host, port: ssh.listen.port })
      yield* Effect.logInfo(`ssh listening on tcp ${bound.host}:${bound.port}`)
    }
    return { [ALPN]: handler(options) }
  })
