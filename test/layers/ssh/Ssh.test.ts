/**
 * SSH over alknet, end to end: a memory node serving `alknet/ssh` on QUIC (127.0.0.1, port 0), clients over real
 * QUIC connections.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Layer, Option, Redacted } from "effect"
import type { Scope } from "effect"
import { createHash, randomBytes } from "node:crypto"
import * as net from "node:net"
import * as Node from "../../../src/layers/Node.js"
import * as Quic from "../../../src/layers/quic/Lazy.js"
import * as Keys from "../../../src/layers/ssh/Keys.js"
import * as SshClient from "../../../src/layers/ssh/SshClient.js"
import * as SshServer from "../../../src/layers/ssh/SshServer.js"
import type { Config } from "../../../src/schema/Config.js"
import * as IdentityStore from "../../../src/services/IdentityStore.js"
import * as Tls from "../../../src/services/Tls.js"

const MNEMONIC = Redacted.make(
  "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
)

const keyOf = (byte: number) => Keys.fromSeed(new Uint8Array(32).fill(byte))
const alice = keyOf(1)
const bob = keyOf(2)
const carol = keyOf(3)
const fingerprintOf = (key: Keys.SshKey) => Tls.ed25519Fingerprint(key.publicKey)

const peer = (peer_id: string, key: Keys.SshKey, scopes: ReadonlyArray<string>) => ({
  peer_id,
  fingerprints: [fingerprintOf(key)],
  scopes: [...scopes],
  resources: {},
  enabled: true
})

/** A memory node serving SSH with `ssh` settings; alice may exec and forward, bob may only connect. */
const startNode = (ssh: NonNullable<typeof Config.Encoded["ssh"]> = {}, config: typeof Config.Encoded = {}) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(Node.layerMemory({
      mnemonic: MNEMONIC,
      config: { ...config, ssh: { auth_timeout_ms: 10000, ...ssh } }
    }))
    const node = Effect.runSync(Effect.provide(Node.Node, context))
    const store = Effect.runSync(Effect.provide(IdentityStore.IdentityStore, context))
    yield* store.putPeer(peer("alice", alice, [SshServer.EXEC_SCOPE, SshServer.FORWARD_SCOPE]))
    yield* store.putPeer(peer("bob", bob, []))
    const [host, port] = node.transports[0]!.address.replace("quic://", "").split(":")
    const address = { host: host!, port: Number(port) }
    const connect = Quic.connect(address, { alpn: SshServer.ALPN, expectedFingerprint: node.fingerprint })
    const hostKey = yield* Effect.provide(Keys.fromVault(), context)
    return { node, store, connect, hostKey }
  })

const collect = () => {
  const chunks: Array<Buffer> = []
  return { write: (chunk: Buffer) => void chunks.push(chunk), text: () => Buffer.concat(chunks).toString("utf8") }
}

const run = (session: SshClient.SshSession, command: string, stdin?: Uint8Array) =>
  Effect.gen(function*() {
    const stdout = collect()
    const stderr = collect()
    const status = yield* session.exec(command, {
      stdout: stdout.write,
      stderr: stderr.write,
      ...(stdin === undefined ? {} : { stdin })
    })
    return { ...status, stdout: stdout.text(), stderr: stderr.text() }
  })

/** A TCP server on 127.0.0.1:0 that echoes what it receives. */
const echoServer: Effect.Effect<number, never, Scope.Scope> = Effect.acquireRelease(
  Effect.async<net.Server>((resume) => {
    const server = net.createServer((socket) => socket.pipe(socket))
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
  }),
  (server) => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
).pipe(Effect.map((server) => (server.address() as net.AddressInfo).port))

describe("SSH over alknet", () => {
  it.scopedLive("exec passes stdin, stdout, stderr and the exit status; a signal is reported as such", () =>
    Effect.gen(function*() {
      const { connect, hostKey } = yield* startNode()
      const connection = yield* connect
      const session = yield* SshClient.open(connection, { key: alice, hostKey: hostKey.fingerprint })
      expect(yield* run(session, "printf out; printf err >&2; exit 3")).toEqual({
        code: 3,
        signal: null,
        stdout: "out",
        stderr: "err"
      })
      expect(yield* run(session, "tr a-z A-Z", Buffer.from("hello\n"))).toMatchObject({ code: 0, stdout: "HELLO\n" })
      expect(yield* run(session, "kill -TERM $$")).toMatchObject({ code: null, signal: "SIGTERM" })
      // The node's own settings (ALKNET_*: a token, a home) are not in the command's environment; the rest is.
      process.env.ALKNET_TOKEN = "alk_not-for-commands"
      process.env.SSH_TEST_VISIBLE = "visible"
      try {
        expect(yield* run(session, 'echo "${ALKNET_TOKEN:-unset} $SSH_TEST_VISIBLE"')).toMatchObject({
          code: 0,
          stdout: "unset visible\n"
        })
      } finally {
        delete process.env.ALKNET_TOKEN
        delete process.env.SSH_TEST_VISIBLE
      }
      // Several commands on one session, and several sessions on one connection.
      const second = yield* SshClient.open(connection, { key: alice })
      expect(second.hostKey).toBe(hostKey.fingerprint)
      expect(yield* run(second, "echo two")).toMatchObject({ code: 0, stdout: "two\n" })
    }))

  it.scopedLive("default deny: no ssh:exec, an unknown key, or a forward outside the allow-list are refused", () =>
    Effect.gen(function*() {
      const { connect } = yield* startNode()
      const connection = yield* connect
      // bob is a peer without ssh:exec: he connects, his commands are refused.
      const bobs = yield* SshClient.open(connection, { key: bob })
      const refused = yield* Effect.flip(run(bobs, "echo hi"))
      expect(refused.reason).toBe("Refused")
      // carol is no peer at all.
      const unknown = yield* Effect.flip(SshClient.open(connection, { key: carol }))
      expect(unknown.reason).toBe("Auth")
      // alice may exec, but not forward where the allow-list does not say so (it is empty by default).
      const alices = yield* SshClient.open(connection, { key: alice })
      const forward = yield* Effect.flip(Effect.scoped(alices.forward("127.0.0.1", 22)))
      expect(forward.reason).toBe("Refused")
      // The session survives refusals.
      expect(yield* run(alices, "echo still")).toMatchObject({ code: 0, stdout: "still\n" })
    }))

  it.scopedLive("a peer added, changed or removed while the node runs applies to the next attempt without restart", () =>
    Effect.gen(function*() {
      const { connect, store } = yield* startNode()
      const connection = yield* connect
      expect((yield* Effect.flip(SshClient.open(connection, { key: carol }))).reason).toBe("Auth")
      yield* store.putPeer(peer("carol", carol, [SshServer.EXEC_SCOPE]))
      const session = yield* SshClient.open(connection, { key: carol })
      expect(yield* run(session, "echo carol")).toMatchObject({ code: 0, stdout: "carol\n" })
      // Losing the scope stops her next command on the open session.
      yield* store.putPeer(peer("carol", carol, []))
      expect((yield* Effect.flip(run(session, "echo again"))).reason).toBe("Refused")
      yield* store.removePeer("carol")
      expect((yield* Effect.flip(SshClient.open(connection, { key: carol }))).reason).toBe("Auth")
    }))

  it.scopedLive("the host key is pinned: a wrong one is refused before authenticating", () =>
    Effect.gen(function*() {
      const { connect, hostKey } = yield* startNode()
      const connection = yield* connect
      const wrong = keyOf(7).fingerprint
      const mismatch = yield* Effect.flip(SshClient.open(connection, { key: alice, hostKey: wrong }))
      expect(mismatch.reason).toBe("HostKeyMismatch")
      expect(mismatch.message).toContain(hostKey.fingerprint)
      const session = yield* SshClient.open(connection, { key: alice, hostKey: [wrong, hostKey.fingerprint] })
      expect(session.hostKey).toBe(hostKey.fingerprint)
    }))

  it.scopedLive("a local forward moves 10 MiB intact both ways (ssh:forward, allow-listed destination)", () =>
    Effect.gen(function*() {
      const port = yield* echoServer
      const { connect } = yield* startNode({ forward: [`127.0.0.1:${port}`] })
      const connection = yield* connect
      const session = yield* SshClient.open(connection, { key: alice })
      const channel = yield* session.forward("127.0.0.1", port)
      const payload = randomBytes(10 * 1024 * 1024)
      const received = yield* Effect.async<Buffer>((resume) => {
        const chunks: Array<Buffer> = []
        let length = 0
        channel.on("data", (chunk: Buffer) => {
          chunks.push(chunk)
          length += chunk.length
          if (length >= payload.length) resume(Effect.succeed(Buffer.concat(chunks)))
        })
        channel.write(payload)
      })
      expect(received.length).toBe(payload.length)
      expect(createHash("sha256").update(received).digest("hex")).toBe(
        createHash("sha256").update(payload).digest("hex")
      )
      // bob lacks ssh:forward: refused even to an allow-listed destination.
      const bobs = yield* SshClient.open(connection, { key: bob })
      expect((yield* Effect.flip(Effect.scoped(bobs.forward("127.0.0.1", port)))).reason).toBe("Refused")
    }))

  it.scopedLive("garbage on a stream and a client that never authenticates are cut off; other sessions go on", () =>
    Effect.gen(function*() {
      const { connect } = yield* startNode({ auth_timeout_ms: 2000 })
      const connection = yield* connect
      const good = yield* SshClient.open(connection, { key: alice })

      /** Read a raw stream to its end: the node ended or reset it. */
      const cutOff = (stream: Effect.Effect.Success<typeof connection.openBidi>) =>
        Effect.gen(function*() {
          while (true) {
            const chunk = yield* Effect.either(stream.read)
            if (chunk._tag === "Left" || Option.isNone(chunk.right)) return true
          }
        })

      const garbage = yield* connection.openBidi
      yield* garbage.write(Buffer.from("SSH-2.0-x\r\n"))
      yield* garbage.write(randomBytes(4096))
      // A client that says hello and then nothing: never authenticates.
      const silent = yield* connection.openBidi
      yield* silent.write(Buffer.from("SSH-2.0-silent\r\n"))
      const bothCut = yield* Deferred.make<void>()
      yield* Effect.forkScoped(
        Effect.zipRight(Effect.all([cutOff(garbage), cutOff(silent)], { concurrency: 2 }), Deferred.succeed(bothCut, undefined))
      )
      // While those are cut off, the good session serves, and still does afterwards.
      expect(yield* run(good, "echo ok")).toMatchObject({ code: 0, stdout: "ok\n" })
      yield* Deferred.await(bothCut)
      expect(yield* run(good, "echo still ok")).toMatchObject({ code: 0, stdout: "still ok\n" })
      const fresh = yield* SshClient.open(connection, { key: alice })
      expect(yield* run(fresh, "echo fresh")).toMatchObject({ code: 0, stdout: "fresh\n" })
    }))

  it.scopedLive("limits: sessions per identity, and an idle session is closed", () =>
    Effect.gen(function*() {
      const { connect } = yield* startNode({ max_sessions_per_identity: 1, idle_timeout_ms: 3000 })
      const connection = yield* connect
      const first = yield* Effect.forkScoped(Effect.scoped(Effect.gen(function*() {
        const session = yield* SshClient.open(connection, { key: alice })
        expect(yield* run(session, "echo first")).toMatchObject({ code: 0, stdout: "first\n" })
        const second = yield* Effect.flip(SshClient.open(connection, { key: alice }))
        expect(second.reason).toBe("Auth")
        // bob is another identity: his count is his own.
        yield* SshClient.open(connection, { key: bob })
        // Left alone, the session is closed by the node.
        yield* session.closed
      })))
      yield* Fiber.join(first)
      // Once it is gone, alice may open another.
      const again = yield* SshClient.open(connection, { key: alice })
      expect(yield* run(again, "echo again")).toMatchObject({ code: 0, stdout: "again\n" })
    }))

  it.scopedLive("a commands allow-list lets ssh:exec run exactly those commands", () =>
    Effect.gen(function*() {
      const { connect } = yield* startNode({ commands: ["echo allowed"] })
      const session = yield* SshClient.open(yield* connect, { key: alice })
      expect(yield* run(session, "echo allowed")).toMatchObject({ code: 0, stdout: "allowed\n" })
      expect((yield* Effect.flip(run(session, "echo allowed; id"))).reason).toBe("Refused")
    }))

  it.scopedLive("refused keys count towards the address's auth-failure limit: then the address is refused", () =>
    Effect.gen(function*() {
      const { connect } = yield* startNode({}, { rate_limits: { max_auth_failures_per_ip: 2 } })
      const connection = yield* connect
      expect((yield* Effect.flip(SshClient.open(connection, { key: carol }))).reason).toBe("Auth")
      expect((yield* Effect.flip(SshClient.open(connection, { key: carol }))).reason).toBe("Auth")
      // 127.0.0.1 is now blocked: even a good key's new session is cut off before the handshake.
      const blocked = yield* Effect.flip(SshClient.open(connection, { key: alice }))
      expect(blocked.reason).toBe("Connect")
    }))
})
