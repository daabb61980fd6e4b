/**
 * SSH over alknet: the protocol handler for ALPN `alknet/ssh` (`ssh2` 1.17, over QUIC bidirectional streams).
 *
 * Each bidirectional stream the client opens carries one SSH connection (`ssh2`'s server runs over the stream wrapped
 * as a Node duplex). What it serves, by default nothing but what an identity's scopes allow:
 *
 * - **Host key**: an Ed25519 key from the vault (`Keys.fromVault`, `m/74'/0'/1'/0'` unless configured otherwise).
 * - **Authentication**: public key only, Ed25519 keys only. The key is resolved like a TLS client key: its
 *   fingerprint `ed25519:<hex>` must be listed by an enabled peer (resolved on every attempt, so peers added, changed
 *   or disabled while the node runs take effect at once). Password, keyboard-interactive, hostbased and `none` are
 *   refused; after `maxAuthAttempts` refusals, or without success within `authTimeout`, the stream is reset.
 * - **exec**: for identities with the scope `ssh:exec` (checked again, live, for every command), and, when the policy
 *   has a `commands` allow-list, only the commands it lists verbatim. The command runs with `/bin/sh -c` as the
 *   node's user, in the node's environment less its `ALKNET_*` variables; stdin, stdout, stderr and the exit status
 *   (or signal) go to the client.
 * - **direct-tcpip** (`ssh -L`): for identities with the scope `ssh:forward`, to `host:port` destinations in the
 *   policy's `forward` allow-list only (compared as the client names them).
 * - Everything else (shell, pty, X11, agent forwarding, subsystems such as SFTP, env, remote forwarding) is refused.
 * - **Limits**: at most `maxSessionsPerIdentity` SSH connections per identity at once; a connection with no traffic
 *   for `idleTimeoutMs` (0: never) is closed.
 *
 * Every session, command and forward is logged with the identity's id and key fingerprint (never key material).
 * Garbage on a stream or a failing client ends that stream only; the node keeps serving the others.
 */
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import * as net from "node:net"
import type { Socket } from "node:net"
import ssh2 from "ssh2"
import type { AuthContext, Connection as SshConnection, ServerChannel, Session } from "ssh2"
import { Deferred, Duration, Effect, FiberSet, Option, Redacted, Runtime } from "effect"
import type { Scope } from "effect"
import type { Identity } from "../../schema/Identity.js"
import type { ProtocolHandler } from "../../services/Endpoint.js"
import * as EndpointError from "../../errors/EndpointError.js"
import * as NodeMetrics from "../../observability/NodeMetrics.js"
import type { Duplex } from "node:stream"
import * as DuplexStream from "./Duplex.js"
import * as Keys from "./Keys.js"
import { EXEC_SCOPE, FORWARD_SCOPE } from "./Protocol.js"

export { ALPN, EXEC_SCOPE, FORWARD_SCOPE } from "./Protocol.js"

/** What the server allows; read for every decision, so it may change while the node runs. */
export interface Policy {
  /** The only commands `ssh:exec` may run (verbatim); undefined: any command. */
  readonly commands?: ReadonlyArray<string> | undefined
  /** `host:port` destinations `ssh:forward` may reach. Empty: none. */
  readonly forward: ReadonlyArray<string>
  /** SSH connections one identity may have open at once. */
  readonly maxSessionsPerIdentity: number
  /** Close an SSH connection after this long without traffic (0: never). */
  readonly idleTimeoutMs: number
}

export const defaultPolicy: Policy = { forward: [], maxSessionsPerIdentity: 16, idleTimeoutMs: 0 }

export interface ServerOptions {
  /** The host key (`Keys.fromVault()`). */
  readonly hostKey: Keys.SshKey
  /** Who a client key is: its `ed25519:<hex>` fingerprint resolved like a TLS one (the node's identity providers). */
  readonly resolve: (fingerprint: string) => Effect.Effect<Option.Option<Identity>>
  /** The policy in force (default: `defaultPolicy`, no forwards). */
  readonly policy?: Effect.Effect<Policy>
  /** Reset a stream whose client has not authenticated within this long (default 10 s). */
  readonly authTimeout?: Duration.DurationInput
  /** Refused authentication attempts before the stream is reset (default 6). */
  readonly maxAuthAttempts?: number
  /**
   * A gate every SSH connection passes first, with the client's address (e.g. blocked addresses, connections per IP;
   * what it acquires is held for the connection's life). A refused connection is logged and closed.
   */
  readonly admit?: (host: string) => Effect.Effect<void, { readonly message: string }, Scope.Scope>
  /** Told of every refused key, with the client's address (e.g. the node's per-address auth-failure limiter). */
  readonly onAuthFailure?: (host: string) => Effect.Effect<void>
}

const { Server, utils } = ssh2

/** The node's environment without its own settings (`ALKNET_*`: a token, a home) for the commands it runs. */
const commandEnv = (): NodeJS.ProcessEnv =>
  Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("ALKNET_")))

interface Authenticated {
  readonly identity: Identity
  readonly fingerprint: string
}

/** Where an SSH connection comes from: its byte stream and the client's address. */
interface Transport {
  /** The client's host, for logs and the auth-failure limiter. */
  readonly host: string
  /** The byte stream, for the scope's life; `onActivity` is told of every chunk either way. */
  readonly open: (onActivity: () => void) => Effect.Effect<Duplex, never, Scope.Scope>
  readonly annotations: Record<string, unknown>
}

/** Serves SSH connections; one per handler or listener set (the per-identity session count is shared). */
const makeServer = (options: ServerOptions) => {
  const open = new Map<string, number>()
  const policy = options.policy ?? Effect.succeed(defaultPolicy)
  const authTimeout = options.authTimeout ?? Duration.seconds(10)
  const maxAuthAttempts = options.maxAuthAttempts ?? 6
  const hostKeys = [Redacted.value(options.hostKey.privateKeyPem)]

  const serve = (transport: Transport): Effect.Effect<void, never, Scope.Scope> =>
    Effect.gen(function*() {
      if (options.admit !== undefined) {
        const admitted = yield* Effect.either(options.admit(transport.host))
        if (admitted._tag === "Left") {
          return yield* Effect.logWarning(`ssh connection refused: ${admitted.left.message}`).pipe(
            Effect.annotateLogs(transport.annotations)
          )
        }
      }
      yield* NodeMetrics.trackConnection("ssh")
      const runtime = yield* Effect.runtime<never>()
      const runFork = Runtime.runFork(runtime)
      const runCallback = <A>(effect: Effect.Effect<A>, onDone: (a: A) => void) =>
        Runtime.runCallback(runtime)(effect, {
          onExit: (exit) => {
            if (exit._tag === "Success") onDone(exit.value)
          }
        })
      let lastActivity = Date.now()
      const duplex = yield* transport.open(() => {
        lastActivity = Date.now()
      })
      const authenticated = yield* Deferred.make<Authenticated>()
      const children = new Set<ChildProcess>()
      const sockets = new Set<Socket>()
      let counted: string | undefined
      let signedIn: Authenticated | undefined
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          for (const child of children) child.kill("SIGKILL")
          for (const socket of sockets) socket.destroy()
          if (counted !== undefined) {
            const n = (open.get(counted) ?? 1) - 1
            if (n <= 0) open.delete(counted)
            else open.set(counted, n)
          }
        })
      )
      const annotations = transport.annotations
      const log = (message: string, extra: Record<string, unknown> = {}) =>
        runFork(Effect.logInfo(message).pipe(Effect.annotateLogs({ ...annotations, ...extra })))
      const warn = (message: string, extra: Record<string, unknown> = {}) =>
        runFork(Effect.logWarning(message).pipe(Effect.annotateLogs({ ...annotations, ...extra })))

      /** The identity of a key, resolved now (live): the peer may have been changed since the session began. */
      const current = (fingerprint: string) => options.resolve(fingerprint)

      let refusals = 0
      const refuse = (ctx: AuthContext, why: string) => {
        refusals++
        warn(`ssh authentication refused: ${why}`, { user: ctx.username, method: ctx.method })
        NodeMetrics.countAuthFailure("ssh")
        if (options.onAuthFailure !== undefined) runFork(options.onAuthFailure(transport.host))
        ctx.reject(["publickey"])
        if (refusals >= maxAuthAttempts) duplex.destroy()
      }

      const onAuthentication = (ctx: AuthContext) => {
        if (ctx.method !== "publickey") {
          // `none` is how a client asks which methods exist: not a failure worth counting.
          if (ctx.method === "none") return ctx.reject(["publickey"])
          return refuse(ctx, `method ${ctx.method} is not accepted (public key only)`)
        }
        const fingerprint = Keys.alknetFingerprintOfBlob(ctx.key.data)
        if (fingerprint === undefined) return refuse(ctx, `key type ${ctx.key.algo} is not accepted (Ed25519 only)`)
        runCallback(current(fingerprint), (found) => {
          if (Option.isNone(found)) return refuse(ctx, `key ${fingerprint} belongs to no peer`)
          if (ctx.signature === undefined) return ctx.accept() // the client asks whether this key would do
          const parsed = utils.parseKey(ctx.key.data)
          const valid = !(parsed instanceof Error) && ctx.blob !== undefined &&
            parsed.verify(ctx.blob, ctx.signature, ctx.hashAlgo as never) === true
          if (!valid) return refuse(ctx, `bad signature for key ${fingerprint}`)
          const identity = found.value
          const sessions = open.get(identity.id) ?? 0
          runCallback(policy, ({ maxSessionsPerIdentity }) => {
            if (sessions >= maxSessionsPerIdentity) {
              return refuse(ctx, `${identity.id} has ${sessions} SSH sessions open (at most ${maxSessionsPerIdentity})`)
            }
            counted = identity.id
            open.set(identity.id, sessions + 1)
            signedIn = { identity, fingerprint }
            Deferred.unsafeDone(authenticated, Effect.succeed(signedIn))
            log("ssh session opened", { identity: identity.id, key: fingerprint, user: ctx.username })
            ctx.accept()
          })
        })
      }

      /** Decide with the identity as it is now; `allow` gets it, else the request is refused with a log line. */
      const authorize = (
        who: Authenticated,
        what: string,
        check: (identity: Identity, policy: Policy) => string | undefined,
        allow: (identity: Identity) => void,
        deny: () => void
      ) =>
        runCallback(Effect.zip(current(who.fingerprint), policy), ([found, p]) => {
          const problem = Option.isNone(found) ? "the key belongs to no peer any more" : check(found.value, p)
          if (problem === undefined && Option.isSome(found)) return allow(found.value)
          warn(`ssh ${what} refused: ${problem}`, { identity: who.identity.id, key: who.fingerprint })
          deny()
        })

      const exec = (who: Authenticated, channel: ServerChannel, command: string, identity: Identity) => {
        log("ssh exec", { identity: identity.id, command })
        const child = spawn("/bin/sh", ["-c", command], { stdio: ["pipe", "pipe", "pipe"], env: commandEnv() })
        children.add(child)
        child.stdin.on("error", () => undefined) // the command may exit without reading its input
        channel.pipe(child.stdin)
        child.stdout.pipe(channel, { end: false })
        child.stderr.pipe(channel.stderr, { end: false })
        const drained = (writable: NodeJS.WritableStream & { writableLength: number }) =>
          new Promise<void>((resolve) => {
            if (writable.writableLength === 0) return resolve()
            writable.once("drain", () => resolve())
            writable.once("close", () => resolve())
          })
        let started = true
        child.on("error", (error) => {
          started = false
          channel.stderr.write(`alknet: cannot run the command: ${error.message}\n`)
        })
        child.on("close", (code, signal) => {
          children.delete(child)
          void Promise.all([drained(channel), drained(channel.stderr)]).then(() => {
            if (signal !== null) channel.exit(signal.replace(/^SIG/, ""), false, "")
            else channel.exit(started ? code ?? 0 : 127)
            channel.end()
            log("ssh exec ended", { identity: who.identity.id, command, status: signal ?? (started ? code : 127) })
          })
        })
        channel.on("close", () => {
          if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM")
        })
      }

      const onSession = (who: Authenticated) => (accept: () => Session) => {
        const session = accept()
        const refuseRequest = (what: string) => (...args: ReadonlyArray<unknown>) => {
          warn(`ssh ${what} refused: not served`, { identity: who.identity.id })
          const reject = args[1]
          if (typeof reject === "function") reject()
        }
        for (const what of ["pty", "shell", "x11", "env", "auth-agent", "subsystem", "sftp", "signal", "window-change"]) {
          session.on(what, refuseRequest(what))
        }
        session.on("exec", (acceptExec, rejectExec, info) =>
          authorize(
            who,
            `exec of ${JSON.stringify(info.command)}`,
            (identity, p) =>
              !identity.scopes.includes(EXEC_SCOPE)
                ? `${identity.id} lacks the scope ${EXEC_SCOPE}`
                : p.commands !== undefined && !p.commands.includes(info.command)
                ? "the command is not in the allow-list"
                : undefined,
            (identity) => exec(who, acceptExec(), info.command, identity),
            rejectExec
          ))
      }

      const onTcpip = (who: Authenticated) =>
      (
        accept: () => ServerChannel,
        reject: () => void,
        info: { readonly destIP: string; readonly destPort: number }
      ) => {
        const destination = `${info.destIP}:${info.destPort}`
        authorize(
          who,
          `forward to ${destination}`,
          (identity, p) =>
            !identity.scopes.includes(FORWARD_SCOPE)
              ? `${identity.id} lacks the scope ${FORWARD_SCOPE}`
              : !p.forward.includes(destination)
              ? "the destination is not in the allow-list"
              : undefined,
          (identity) => {
            const socket = net.connect({ host: info.destIP, port: info.destPort })
            sockets.add(socket)
            socket.once("close", () => sockets.delete(socket))
            socket.once("error", (error) => {
              warn(`ssh forward to ${destination} failed: ${error.message}`, { identity: identity.id })
              if (socket.connecting) reject()
            })
            socket.once("connect", () => {
              log("ssh forward", { identity: identity.id, destination })
              const channel = accept()
              channel.on("error", () => socket.destroy())
              channel.once("close", () => socket.destroy())
              socket.once("close", () => channel.destroy())
              channel.pipe(socket)
              socket.pipe(channel)
            })
          },
          reject
        )
      }

      const onClient = (client: SshConnection) => {
        client.on("error", () => undefined) // a broken client ends its stream ('close' below), nothing more
        client.on("authentication", onAuthentication)
        client.on("ready", () => {
          const who = signedIn
          if (who === undefined) return client.end() // unreachable: ssh2 is ready only after we accepted a key
          client.on("session", onSession(who))
          client.on("tcpip", onTcpip(who))
          client.on("request", (_accept, reject, name) => {
            warn(`ssh global request ${name} refused: not served`, { identity: who.identity.id })
            reject?.()
          })
        })
      }

      const server = new Server({ hostKeys, ident: "alknet" }, onClient)
      server.injectSocket(duplex as unknown as Socket)

      const closed = Effect.async<void>((resume) => {
        if (duplex.closed) return resume(Effect.void)
        duplex.once("close", () => resume(Effect.void))
      })
      const notAuthenticated = Effect.sleep(authTimeout).pipe(
        Effect.zipRight(Deferred.isDone(authenticated)),
        Effect.flatMap((done) =>
          done ? Effect.never : Effect.sync(() => warn(`ssh client did not authenticate within ${Duration.format(authTimeout)}`))
        )
      )
      const idle = Effect.flatMap(policy, ({ idleTimeoutMs }) => {
        if (idleTimeoutMs <= 0) return Effect.never
        const check: Effect.Effect<void> = Effect.suspend(() => {
          const left = lastActivity + idleTimeoutMs - Date.now()
          return left <= 0
            ? Effect.sync(() => warn(`ssh connection idle for ${idleTimeoutMs} ms: closed`))
            : Effect.zipRight(Effect.sleep(Duration.millis(left)), check)
        })
        return check
      })
      yield* Effect.raceAll([closed, notAuthenticated, idle])
      if (signedIn !== undefined) log("ssh session closed", { identity: signedIn.identity.id, key: signedIn.fingerprint })
    })

  return serve
}

/** The SSH protocol handler: register it under `ALPN` on the endpoint. Each bidirectional stream is one SSH connection. */
export const handler = (options: ServerOptions): ProtocolHandler => {
  const serve = makeServer(options)
  return (connection) =>
    Effect.gen(function*() {
      const sessions = yield* FiberSet.make<void>()
      yield* Effect.forever(
        Effect.flatMap(connection.acceptBidi, (stream) =>
          FiberSet.run(
            sessions,
            Effect.scoped(serve({
              host: connection.remoteAddress.host,
              open: (onActivity) => DuplexStream.make(stream, onActivity),
              annotations: { stream: stream.id }
            }))
          ))
      )
    }).pipe(Effect.catchAll(() => Effect.void))
}

export interface ListenOptions extends ServerOptions {
  /** Address to listen on (default 127.0.0.1). */
  readonly host?: string
  /** Port (default 0: any free port; read the real one from the result). */
  readonly port?: number
}

/**
 * A plain TCP SSH listener (`ssh.listen`), so that a stock OpenSSH client can connect: the same server, policy and
 * identities as `alknet/ssh` over QUIC. Listens while the scope is open; closing it closes every connection.
 */
export const listen = (options: ListenOptions): Effect.Effect<{ readonly host: string; readonly port: number }, EndpointError.EndpointError, Scope.Scope> =>
  Effect.gen(function*() {
    const serve = makeServer(options)
    const sessions = yield* FiberSet.make<void>()
    const run = yield* FiberSet.runtime(sessions)<never>()
    const host = options.host ?? "127.0.0.1"
    const server = net.createServer({ pauseOnConnect: true }, (socket) => {
      socket.on("error", () => undefined)
      run(Effect.scoped(serve({
        host: socket.remoteAddress ?? "unknown",
        open: (onActivity) =>
          Effect.acquireRelease(
            Effect.sync(() => {
              socket.on("data", onActivity)
              socket.resume()
              return socket as Duplex
            }),
            () => Effect.sync(() => socket.destroy())
          ),
        annotations: { remote: `${socket.remoteAddress}:${socket.remotePort}`, transport: "tcp" }
      })))
    })
    yield* Effect.acquireRelease(
      Effect.async<void, EndpointError.EndpointError>((resume) => {
        server.once("error", (e: NodeJS.ErrnoException) =>
          resume(EndpointError.make("Bind", `ssh: cannot listen on ${host}:${options.port ?? 0}: ${e.code ?? e.message}`)))
        server.listen(options.port ?? 0, host, () => resume(Effect.void))
      }),
      // Close the open connections first: the server's close waits for them.
      () =>
        Effect.zipRight(
          FiberSet.clear(sessions),
          Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
        )
    )
    const address = server.address() as net.AddressInfo
    return { host: address.address, port: address.port }
  })
