/**
 * The client side of SSH over alknet: an SSH session on one bidirectional stream of an `alknet/ssh` connection
 * (`Quic.connect(address, { alpn: SshServer.ALPN, … })`), then commands and local forwards over it.
 *
 * The QUIC connection already authenticates the node (its TLS fingerprint, pinned). The SSH host key can be pinned
 * as well (`hostKey`: OpenSSH `SHA256:…` fingerprints; `alknet ssh host-key` prints the node's): any other key fails
 * with `HostKeyMismatch`. The client authenticates with an Ed25519 key (by default the home's node key, whose
 * `ed25519:<hex>` fingerprint is how peers know it).
 */
import type { Duplex } from "node:stream"
import ssh2 from "ssh2"
import type { ClientChannel } from "ssh2"
import { Duration, Effect, Redacted } from "effect"
import type { Scope } from "effect"
import { SshError } from "../../errors/SshError.js"
import type { Connection } from "../../services/Endpoint.js"
import * as DuplexStream from "./Duplex.js"
import * as Keys from "./Keys.js"

export interface SessionOptions {
  /** Our key. */
  readonly key: Keys.SshKey
  /** The node's SSH host key fingerprint(s) (`SHA256:…`): pinned when given. */
  readonly hostKey?: string | ReadonlyArray<string>
  /** The SSH user name (logged by the node; who we are is the key). Default `alknet`. */
  readonly username?: string
  /** Give up if the session is not ready within this long (default 20 s). */
  readonly readyTimeout?: Duration.DurationInput
}

/** How a command ended: its exit status, or the signal that ended it. */
export interface ExitStatus {
  readonly code: number | null
  readonly signal: string | null
}

export interface ExecIo {
  /** Bytes for the command's stdin (default: none, EOF at once). */
  readonly stdin?: Uint8Array | NodeJS.ReadableStream
  readonly stdout: (chunk: Buffer) => void
  readonly stderr: (chunk: Buffer) => void
}

export interface SshSession {
  /** The host key fingerprint the node presented (`SHA256:…`). */
  readonly hostKey: string
  /** Run a command; succeeds with how it ended. Fails `Refused` when the node does not let us run it. */
  readonly exec: (command: string, io: ExecIo) => Effect.Effect<ExitStatus, SshError>
  /** Open a channel to `host:port` as the node reaches it (`ssh -L`); closed with the scope. */
  readonly forward: (host: string, port: number) => Effect.Effect<Duplex, SshError, Scope.Scope>
  /** Completes when the session has ended (the node closed it, e.g. idle, or the connection went away). */
  readonly closed: Effect.Effect<void>
}

const { Client } = ssh2

const message = (e: unknown) => (e instanceof Error ? e.message : String(e))

/** Open an SSH session over a new stream of `connection`; it ends with the scope. */
export const open = (connection: Connection, options: SessionOptions): Effect.Effect<SshSession, SshError, Scope.Scope> =>
  Effect.gen(function*() {
    const stream = yield* connection.openBidi.pipe(
      Effect.mapError((e) => new SshError({ reason: "Connect", message: `cannot open an SSH stream: ${e.message}` }))
    )
    const duplex = yield* DuplexStream.make(stream)
    const pinned = options.hostKey === undefined
      ? undefined
      : typeof options.hostKey === "string"
      ? [options.hostKey]
      : options.hostKey
    let presented = ""
    let ended = false
    const client = new Client()
    // ssh2 may report more than one error for one failure (e.g. the stream closing before the handshake): the first
    // decides the outcome below; none may go unhandled.
    client.on("error", () => undefined)
    client.once("close", () => {
      ended = true
    })
    yield* Effect.addFinalizer(() => Effect.sync(() => client.end()))
    yield* Effect.async<void, SshError>((resume) => {
      client.once("ready", () => resume(Effect.void))
      client.once("error", (error: Error & { level?: string }) => {
        if (pinned !== undefined && presented !== "" && !pinned.includes(presented)) {
          return resume(Effect.fail(
            new SshError({
              reason: "HostKeyMismatch",
              message: `the node's SSH host key is ${presented}, not the pinned ${pinned.join(" or ")}`
            })
          ))
        }
        if (error.level === "client-authentication") {
          return resume(Effect.fail(
            new SshError({
              reason: "Auth",
              message: `the node refused our key ${Keys.fingerprintOfBlob(Keys.publicKeyBlob(options.key.publicKey))} ` +
                "(it must be the key of a peer the node knows)"
            })
          ))
        }
        resume(Effect.fail(new SshError({ reason: "Connect", message: `SSH session failed: ${error.message}` })))
      })
      client.once("close", () =>
        resume(Effect.fail(new SshError({ reason: "Connect", message: "the node closed the SSH stream" }))))
      client.connect({
        sock: duplex as never,
        username: options.username ?? "alknet",
        privateKey: Redacted.value(options.key.privateKeyPem),
        readyTimeout: Duration.toMillis(options.readyTimeout ?? Duration.seconds(20)),
        hostVerifier: (key: Buffer) => {
          presented = Keys.fingerprintOfBlob(key)
          return pinned === undefined || pinned.includes(presented)
        }
      })
    })

    const exec = (command: string, io: ExecIo) =>
      Effect.async<ExitStatus, SshError>((resume) => {
        let channel: ClientChannel | undefined
        client.exec(command, (error, opened) => {
          if (error !== undefined && error !== null) {
            return resume(Effect.fail(
              new SshError({ reason: "Refused", message: `the node refused to run the command: ${message(error)}` })
            ))
          }
          channel = opened
          let status: ExitStatus = { code: null, signal: null }
          opened.on("exit", (code: number | null, signal?: string) => {
            status = { code: typeof code === "number" ? code : null, signal: signal ?? null }
          })
          opened.on("data", (chunk: Buffer) => io.stdout(chunk))
          opened.stderr.on("data", (chunk: Buffer) => io.stderr(chunk))
          // The node sends the status, then EOF, then closes: the command is over at EOF, whether or not our stdin
          // has ended (`sleep 9 | alknet ssh … -- echo hi` returns at once, as with ssh).
          let finished = false
          const finish = () => {
            if (finished) return
            finished = true
            if (io.stdin !== undefined && !(io.stdin instanceof Uint8Array)) io.stdin.unpipe(opened)
            opened.destroy()
            resume(Effect.succeed(status))
          }
          opened.once("end", finish)
          opened.once("close", finish)
          if (io.stdin === undefined) opened.end()
          else if (io.stdin instanceof Uint8Array) opened.end(io.stdin)
          else io.stdin.pipe(opened)
        })
        return Effect.sync(() => channel?.destroy())
      })

    const forward = (host: string, port: number) =>
      Effect.acquireRelease(
        Effect.async<ClientChannel, SshError>((resume) => {
          client.forwardOut("127.0.0.1", 0, host, port, (error, channel) => {
            if (error !== undefined && error !== null) {
              return resume(Effect.fail(
                new SshError({ reason: "Refused", message: `the node refused to forward to ${host}:${port}: ${message(error)}` })
              ))
            }
            resume(Effect.succeed(channel))
          })
        }),
        (channel) => Effect.sync(() => channel.destroy())
      )

    const closed = Effect.async<void>((resume) => {
      if (ended) return resume(Effect.void)
      const done = () => resume(Effect.void)
      client.once("close", done)
      return Effect.sync(() => void client.off("close", done))
    })

    return { hostKey: presented, exec, forward, closed }
  })
