/**
 * `npm run bench:ssh` — SSH over alknet on loopback, client and server in this process (CPU is both sides'):
 * session setup (a new SSH session on an open QUIC connection: key exchange + public-key auth), an exec round trip
 * (`true`: a process spawn on the node included), and a local forward's throughput (MiB/s one way into a TCP sink,
 * then the same over plain TCP SSH). `--quick` runs 1/5.
 */
import { Effect, Option } from "effect"
import * as net from "node:net"
import * as Quic from "../src/layers/quic/Quic.js"
import * as Keys from "../src/layers/ssh/Keys.js"
import * as SshClient from "../src/layers/ssh/SshClient.js"
import * as SshServer from "../src/layers/ssh/SshServer.js"
import * as Tls from "../src/services/Tls.js"
import * as Endpoint from "../src/services/Endpoint.js"

const quick = process.argv.includes("--quick")
const scale = (n: number) => (quick ? Math.max(1, Math.floor(n / 5)) : n)

const hostKey = Keys.fromSeed(new Uint8Array(32).fill(1))
const user = Keys.fromSeed(new Uint8Array(32).fill(2))
const userFingerprint = Tls.ed25519Fingerprint(user.publicKey)
const options: SshServer.ServerOptions = {
  hostKey,
  resolve: (fp) =>
    Effect.succeed(fp === userFingerprint ? Option.some({ id: "bench", scopes: [SshServer.EXEC_SCOPE, SshServer.FORWARD_SCOPE], resources: {} }) : Option.none()),
  policy: Effect.succeed({ ...SshServer.defaultPolicy, forward: [] as Array<string> })
}

/** Time `n` runs of `f`: wall ms and CPU ms per run. */
const measure = <E>(n: number, f: Effect.Effect<void, E>) =>
  Effect.gen(function*() {
    const cpu = process.cpuUsage()
    const start = performance.now()
    for (let i = 0; i < n; i++) yield* f
    const wall = (performance.now() - start) / n
    const used = process.cpuUsage(cpu)
    return { wall, cpu: (used.user + used.system) / 1000 / n }
  })

/** A TCP sink on 127.0.0.1:0 that counts bytes and tells when `expect` arrived. */
const sink = Effect.acquireRelease(
  Effect.async<{ server: net.Server; waitFor: (bytes: number) => Promise<void> }>((resume) => {
    let waiting: { bytes: number; done: () => void } | undefined
    let received = 0
    const server = net.createServer((socket) =>
      socket.on("data", (chunk) => {
        received += chunk.length
        if (waiting !== undefined && received >= waiting.bytes) waiting.done()
      })
    )
    server.listen(0, "127.0.0.1", () =>
      resume(Effect.succeed({
        server,
        waitFor: (bytes) =>
          new Promise<void>((done) => {
            received = 0
            waiting = { bytes, done }
          })
      })))
  }),
  ({ server }) => Effect.sync(() => server.close())
)

const MiB = 1024 * 1024

const program = Effect.gen(function*() {
  const target = yield* sink
  const port = (target.server.address() as net.AddressInfo).port
  const serverOptions = { ...options, policy: Effect.succeed({ ...SshServer.defaultPolicy, forward: [`127.0.0.1:${port}`] }) }
  const endpoint = yield* Quic.makeEndpoint({
    identity: Tls.RawKey(new Uint8Array(32).fill(3)),
    handlers: { [SshServer.ALPN]: SshServer.handler(serverOptions) }
  })
  const connection = yield* Quic.connect(endpoint.address, { alpn: SshServer.ALPN, expectedFingerprint: endpoint.fingerprint })

  const setup = yield* measure(scale(20), Effect.scoped(Effect.asVoid(SshClient.open(connection, { key: user }))))
  const session = yield* SshClient.open(connection, { key: user })
  const exec = yield* measure(scale(50), Effect.asVoid(session.exec("true", { stdout: () => undefined, stderr: () => undefined })))

  const payload = Buffer.alloc(scale(64) * MiB, 7)
  const forwardOver = (s: SshClient.SshSession) =>
    measure(1, Effect.scoped(Effect.gen(function*() {
      const channel = yield* s.forward("127.0.0.1", port)
      const arrived = target.waitFor(payload.length)
      channel.write(payload)
      yield* Effect.promise(() => arrived)
    })))
  const quicForward = yield* forwardOver(session)

  const tcp = yield* SshServer.listen(serverOptions)
  const tcpSession = yield* Effect.flatMap(
    Effect.async<net.Socket>((resume) => {
      const socket = net.connect(tcp.port, "127.0.0.1", () => resume(Effect.succeed(socket)))
    }),
    (socket) => SshClient.open(wrapSocket(socket), { key: user })
  )
  const tcpForward = yield* forwardOver(tcpSession)

  const mibs = (ms: number) => (payload.length / MiB / (ms / 1000)).toFixed(1)
  console.log("| scenario | wall | CPU |")
  console.log("|---|---|---|")
  console.log(`| SSH session setup (QUIC stream) | ${setup.wall.toFixed(1)} ms | ${setup.cpu.toFixed(1)} ms |`)
  console.log(`| exec \`true\` round trip | ${exec.wall.toFixed(1)} ms | ${exec.cpu.toFixed(1)} ms |`)
  console.log(`| forward ${payload.length / MiB} MiB over alknet/ssh (QUIC) | ${mibs(quicForward.wall)} MiB/s | ${(quicForward.cpu / (payload.length / MiB)).toFixed(1)} ms/MiB |`)
  console.log(`| forward ${payload.length / MiB} MiB over SSH on TCP | ${mibs(tcpForward.wall)} MiB/s | ${(tcpForward.cpu / (payload.length / MiB)).toFixed(1)} ms/MiB |`)
})

/** A TCP socket as the `Connection` the client opens its stream on (one stream: the socket). */
const wrapSocket = (socket: net.Socket): Parameters<typeof SshClient.open>[0] => {
  let taken = false
  const notSupported = Effect.dieMessage("not supported in the bench")
  return {
    side: "client",
    alpn: SshServer.ALPN,
    remoteAddress: { host: "127.0.0.1", port: socket.remotePort ?? 0 },
    peerFingerprint: Option.none(),
    openBidi: Effect.suspend(() => {
      if (taken) return notSupported
      taken = true
      const tryRead = () => {
        const chunk = socket.read() as Buffer | null
        if (chunk !== null) return new Uint8Array(chunk)
        return socket.readableEnded ? null : undefined
      }
      const onReadable = (wake: () => void) => {
        const once = () => {
          socket.off("readable", once)
          socket.off("end", once)
          wake()
        }
        socket.on("readable", once)
        socket.on("end", once)
      }
      return Effect.succeed({
        id: 0,
        tryRead,
        onReadable,
        read: Endpoint.readOf(tryRead, onReadable),
        readable: notSupported as never,
        write: (chunk) => Effect.async((resume) => void socket.write(chunk, () => resume(Effect.void))),
        end: Effect.sync(() => void socket.end()),
        reset: Effect.sync(() => void socket.destroy())
      })
    }),
    acceptBidi: notSupported,
    identity: Effect.succeed(Option.none()),
    setIdentity: () => Effect.succeed(false),
    close: () => Effect.sync(() => void socket.destroy()),
    closed: Effect.never
  }
}

Effect.runPromise(Effect.scoped(program)).then(
  () => process.exit(0),
  (e) => {
    console.error(e)
    process.exit(1)
  }
)
