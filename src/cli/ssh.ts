/**
 * `alknet ssh`: SSH over alknet (ALPN `alknet/ssh` on the node's QUIC endpoint).
 *
 * - `alknet ssh quic://HOST:PORT --fingerprint FP [--home DIR] [--host-key SHA256:…] -- COMMAND…` runs COMMAND on
 *   the node; its stdout and stderr come out here, this program's stdin (when not a terminal) goes to it, and its
 *   exit status is ours (a command ended by a signal: 128 + the signal's number).
 * - `alknet ssh quic://HOST:PORT --fingerprint FP -L LPORT:HOST:PORT`: a local forward; every TCP connection to
 *   127.0.0.1:LPORT is carried to HOST:PORT as the node reaches it, until Ctrl-C.
 * - `alknet ssh host-key [--home DIR]`: the home's SSH host key as a `known_hosts` line and its `SHA256:` fingerprint.
 *
 * The client presents the home's node key both as its TLS identity and as its SSH key (its `ed25519:<hex>`
 * fingerprint is what the node's peers list). The node's TLS fingerprint is pinned (`--fingerprint`, required: a
 * raw-key node fails closed without it); `--host-key` also pins its SSH host key.
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Data, Effect, Option, Runtime } from "effect"
import * as net from "node:net"
import * as os from "node:os"
import { StringDecoder } from "node:string_decoder"
import { CliError, usage } from "./errors.js"
import * as Home from "./home.js"
import * as Io from "./io.js"
import * as Shared from "./options.js"

/** The remote command's exit status, which becomes ours (not an error of alknet's: nothing is printed). */
export class RemoteExit extends Data.TaggedError("RemoteExit")<{ readonly status: number; readonly message: string }> {}

const address = Args.text({ name: "address" }).pipe(
  Args.withDescription("the node, quic://HOST:PORT; or host-key: print the home's SSH host key")
)
const commandWords = Args.text({ name: "command" }).pipe(
  Args.withDescription("the command to run on the node (after --), e.g. -- uname -a"),
  Args.repeated
)

const flags = {
  home: Shared.home,
  fingerprint: Options.text("fingerprint").pipe(
    Options.withPseudoName("FP"),
    Options.withDescription("the node's TLS fingerprint (ed25519:…): pinned; required for a raw-key node"),
    Options.optional
  ),
  hostKey: Options.text("host-key").pipe(
    Options.withPseudoName("SHA256:…"),
    Options.withDescription("the node's SSH host key fingerprint (alknet ssh host-key on the node): pinned"),
    Options.optional
  ),
  local: Options.text("L").pipe(
    Options.withPseudoName("LPORT:HOST:PORT"),
    Options.withDescription("forward 127.0.0.1:LPORT to HOST:PORT as the node reaches it (needs ssh:forward)"),
    Options.optional
  ),
  connectTimeout: Options.text("connect-timeout").pipe(
    Options.withPseudoName("DURATION"),
    Options.withDescription("give up connecting after this long"),
    Options.withDefault("5s")
  )
}

/** `alknet ssh host-key`: the key the home's node serves SSH with (its config's `ssh.host_key_path`). */
const printHostKey = (home: string) =>
  Effect.gen(function*() {
    const config = yield* Home.config(home)
    const Keys = yield* Effect.promise(() => import("../layers/ssh/Keys.js"))
    const HdPath = yield* Effect.promise(() => import("../schema/HdPath.js"))
    const key = yield* Effect.provide(Keys.fromVault(config.ssh?.host_key_path ?? HdPath.sshHost), Home.vault(home))
    yield* Io.out(`${key.publicKeyLine} alknet-host`)
    yield* Io.out(key.fingerprint)
  })

const parseForward = (text: string) => {
  const match = /^(\d{1,5}):(\[[0-9A-Fa-f:.]+\]|[^:[\]\s]+):(\d{1,5})$/.exec(text)
  const local = Number(match?.[1])
  const port = Number(match?.[3])
  return match === null || local > 65535 || port < 1 || port > 65535
    ? Effect.fail(usage(`-L: expected LPORT:HOST:PORT, e.g. 8080:127.0.0.1:80, got ${JSON.stringify(text)}`))
    : Effect.succeed({ local, host: match[2]!.replace(/^\[(.*)\]$/, "$1"), port })
}

const signalStatus = (signal: string) => 128 + (os.constants.signals[signal as NodeJS.Signals] ?? 127)

const run = Command.make("ssh", { address, command: commandWords, ...flags }, (o) =>
  Effect.gen(function*() {
    if (o.address === "host-key") {
      if (o.command.length > 0) return yield* usage("alknet ssh host-key takes no command")
      return yield* printHostKey(o.home)
    }
    const forward = Option.isSome(o.local) ? Option.some(yield* parseForward(o.local.value)) : Option.none()
    if (Option.isSome(forward) && o.command.length > 0) return yield* usage("-L and a command: give one")
    if (Option.isNone(forward) && o.command.length === 0) {
      return yield* usage("alknet ssh needs a command after -- (e.g. alknet ssh ADDR --fingerprint FP -- uname -a) or -L")
    }
    const CallClient = yield* Effect.promise(() => import("../services/CallClient.js"))
    const target = yield* CallClient.parseAddress(o.address)
    if (target.scheme !== "quic") return yield* usage(`alknet ssh speaks QUIC only: expected quic://HOST:PORT, got ${o.address}`)
    if (Option.isSome(o.hostKey) && !/^SHA256:[A-Za-z0-9+/]{43}$/.test(o.hostKey.value)) {
      return yield* usage(`--host-key: expected SHA256:<43 base64 characters>, got ${JSON.stringify(o.hostKey.value)}`)
    }
    const connectTimeout = yield* Shared.parseDuration("--connect-timeout", o.connectTimeout)
    const [Quic, SshClient, Keys, Node, Vault] = yield* Effect.promise(() =>
      Promise.all([
        import("../layers/quic/Lazy.js"),
        import("../layers/ssh/SshClient.js"),
        import("../layers/ssh/Keys.js"),
        import("../layers/Node.js"),
        import("../services/Vault.js")
      ])
    )
    const config = yield* Home.config(o.home)
    const [identity, key] = yield* Effect.zip(
      Node.tlsIdentityOf(config.tls),
      Effect.flatMap(Vault.nodeIdentity, (derived) => Effect.sync(() => Keys.fromSeed(derived.privateKey)))
    ).pipe(Effect.provide(Home.vault(o.home)))
    const connection = yield* Quic.connect({ host: target.host, port: target.port }, {
      alpn: "alknet/ssh",
      identity,
      ...(Option.isSome(o.fingerprint) ? { expectedFingerprint: o.fingerprint.value } : {}),
      connectTimeout
    }).pipe(
      Effect.catchIf((e) => e.reason === "Untrusted", () =>
        new CliError({
          code: "Untrusted",
          message: `${o.address} presents a key no CA vouches for (an alknet node's own key): refusing to connect ` +
            "without --fingerprint; the node prints its fingerprint on its first line"
        })),
      Effect.catchIf((e) => e._tag === "EndpointError" && e.reason === "AlpnRefused", () =>
        new CliError({ code: "Rejected", message: `${o.address} does not serve SSH (its config has no "ssh" section)` }))
    )
    const session = yield* SshClient.open(connection, {
      key,
      ...(Option.isSome(o.hostKey) ? { hostKey: o.hostKey.value } : {})
    })

    if (Option.isSome(forward)) {
      const { local, host, port } = forward.value
      const runtime = yield* Effect.runtime<never>()
      const server = yield* Effect.acquireRelease(
        Effect.async<net.Server, CliError>((resume) => {
          const server = net.createServer((socket) => {
            socket.on("error", () => undefined)
            void Runtime.runPromise(runtime)(Effect.scoped(Effect.gen(function*() {
              const channel = yield* session.forward(host, port)
              yield* Effect.async<void>((done) => {
                socket.pipe(channel)
                channel.pipe(socket)
                socket.once("close", () => done(Effect.void))
                channel.once("close", () => done(Effect.void))
              })
            })).pipe(
              Effect.catchAll((e) => Io.err(`alknet: ${e.message}`)),
              Effect.ensuring(Effect.sync(() => socket.destroy()))
            ))
          })
          server.once("error", (e: NodeJS.ErrnoException) =>
            resume(Effect.fail(new CliError({ code: "Listen", message: `-L: cannot listen on 127.0.0.1:${local}: ${e.code ?? e.message}` }))))
          server.listen(local, "127.0.0.1", () => resume(Effect.succeed(server)))
        }),
        (server) => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
      )
      const bound = (server.address() as net.AddressInfo).port
      yield* Io.err(`alknet ssh: forwarding 127.0.0.1:${bound} to ${host}:${port} through ${o.address} (Ctrl-C stops)`)
      return yield* Effect.never
    }

    const stdio = yield* Io.current
    const out = new StringDecoder("utf8")
    const err = new StringDecoder("utf8")
    const status = yield* session.exec(o.command.join(" "), {
      stdout: (chunk) => stdio.out(out.write(chunk)),
      stderr: (chunk) => stdio.err(err.write(chunk)),
      ...(stdio.stdin.isTTY === true ? {} : { stdin: stdio.stdin })
    })
    stdio.out(out.end())
    stdio.err(err.end())
    if (status.signal !== null) {
      return yield* new RemoteExit({ status: signalStatus(status.signal), message: `killed by ${status.signal}` })
    }
    if (status.code !== null && status.code !== 0) {
      return yield* new RemoteExit({ status: status.code, message: `exit status ${status.code}` })
    }
  }).pipe(Effect.scoped)).pipe(
    Command.withDescription(
      "Run a command on a node over SSH (alknet/ssh), or forward a local port (-L); `alknet ssh host-key` prints the " +
        "home's SSH host key. Exit status: the command's."
    )
  )

export const command = run
