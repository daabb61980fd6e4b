/**
 * The QUIC endpoint and client over real QUIC on 127.0.0.1 (port 0).
 */
import { describe, expect, it } from "@effect/vitest"
import Logger, { LogLevel } from "@matrixai/logger"
import { QUICClient, QUICServer, events } from "@matrixai/quic"
import * as child from "node:child_process"
import * as dgram from "node:dgram"
import { createHmac, randomBytes } from "node:crypto"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { Chunk, Deferred, Effect, Exit, Fiber, Option, Redacted, Ref, Schedule, Schema, Scope, Stream } from "effect"
import type { BidiStream, Connection, ProtocolHandler } from "../../../src/services/Endpoint.js"
import type { TransportError } from "../../../src/errors/TransportError.js"
import * as Codec from "../../../src/call/Codec.js"
import * as CallProtocol from "../../../src/services/CallProtocol.js"
import * as Operation from "../../../src/services/Operation.js"
import * as OperationRegistry from "../../../src/services/OperationRegistry.js"
import * as Tls from "../../../src/services/Tls.js"
import * as Quic from "../../../src/layers/quic/Quic.js"
import { caFiles } from "./certs.js"

const PEER_PROCESS = fileURLToPath(new URL("./peer-process.ts", import.meta.url))
const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")
const utf8 = (text: string) => new TextEncoder().encode(text)

/** Everything the peer writes, until it ends its side. */
const readAll = (stream: BidiStream) =>
  Stream.runCollect(stream.readable).pipe(Effect.map((chunks) => Buffer.concat(Chunk.toArray(chunks))))

/** Write `bytes`, end, read the whole answer. */
const roundTrip = (stream: BidiStream, bytes: Uint8Array) =>
  Effect.zipRight(Effect.zipRight(stream.write(bytes), stream.end), readAll(stream))

/** Copy what the peer writes back to it, then end. */
const echoStream = (prefix: string) => (stream: BidiStream) =>
  Effect.gen(function*() {
    if (prefix !== "") yield* stream.write(utf8(prefix))
    yield* Stream.runForEach(stream.readable, stream.write)
    yield* stream.end
  }).pipe(Effect.catchAll(() => stream.reset))

/** Accept streams for the connection's life, each served by `serve` in its own fiber. */
const acceptEach = (serve: (stream: BidiStream) => Effect.Effect<void>) => (connection: Connection) =>
  Effect.forever(Effect.flatMap(connection.acceptBidi, (stream) => Effect.forkScoped(serve(stream)))).pipe(
    Effect.catchAll(() => Effect.void)
  )

const echo = (prefix = ""): ProtocolHandler => acceptEach(echoStream(prefix))

const endpoint = (options: Partial<Quic.EndpointOptions> & Pick<Quic.EndpointOptions, "handlers">) =>
  Quic.makeEndpoint({ identity: Tls.SelfSigned, ...options })

/** Endpoint options that record every connection that reaches a handler. */
const recording = (alpn: string, handler: ProtocolHandler) =>
  Effect.map(Ref.make<ReadonlyArray<Connection>>([]), (seen) => ({
    seen,
    handlers: {
      [alpn]: (connection: Connection) =>
        Effect.zipRight(Ref.update(seen, (list) => [...list, connection]), handler(connection))
    }
  }))

/** A stock @matrixai/quic 2.0.9 client (the library as published), closed with the scope. */
const stockClient = (address: { host: string; port: number }, config: Record<string, unknown>) =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: () =>
      QUICClient.createQUICClient({
        host: address.host,
        port: address.port,
        crypto: { ops: { randomBytes: async (data: ArrayBuffer) => void randomBytes(data.byteLength).copy(Buffer.from(data)) } },
        config,
        // Without a logger of its own the library logs every connection event at INFO on stderr.
        logger: new Logger("test/stock-client", LogLevel.SILENT)
      }, { timer: 5_000 }),
      catch: (e) => e
    }),
    (client) => Effect.promise(() => client.destroy({ force: true }).catch(() => undefined))
  )

/** One request on a new stream of a stock client: write, end, read to the end. */
const stockRoundTrip = (client: QUICClient, request: string | Uint8Array) =>
  Effect.tryPromise({ catch: (e) => e, try: async () => {
    const stream = client.connection.newStream("bidi")
    const writer = stream.writable.getWriter()
    await writer.write(typeof request === "string" ? utf8(request) : request)
    await writer.close()
    const chunks: Array<Uint8Array> = []
    for await (const chunk of stream.readable) chunks.push(chunk)
    return Buffer.concat(chunks)
  } })

const udpSockets = () => process.getActiveResourcesInfo().filter((name) => name === "UDPSocketWrap" || name === "UDPWRAP").length

describe("Quic endpoint", () => {
  it.scopedLive("dispatches each connection to the handler of its ALPN", () =>
    Effect.gen(function*() {
      const server = yield* endpoint({ handlers: { "test/a": echo("a:"), "test/b": echo("b:") } })
      expect(server.alpns).toEqual(["test/a", "test/b"])
      for (const alpn of ["test/a", "test/b"]) {
        const connection = yield* Quic.connect(server.address, { alpn, expectedFingerprint: server.fingerprint })
        expect(connection.alpn).toBe(alpn)
        const answer = yield* Effect.flatMap(connection.openBidi, (s) => roundTrip(s, utf8("hi")))
        expect(answer.toString()).toBe(`${alpn.slice(-1)}:hi`)
      }
    }))

  it.scopedLive("refuses an unknown ALPN in the handshake; no handler ever sees it", () =>
    Effect.gen(function*() {
      const { handlers, seen } = yield* recording("test/a", echo())
      const server = yield* endpoint({ handlers })
      const error = yield* Effect.flip(
        Quic.connect(server.address, { alpn: "test/other", expectedFingerprint: server.fingerprint })
      )
      expect(error.reason).toBe("AlpnRefused")
      expect(error.message).toContain(`does not serve ALPN "test/other"`)
      expect(yield* Ref.get(seen)).toEqual([])
      expect(yield* server.connections).toBe(0)
    }))

  it.scopedLive("RawKey fingerprints: each side sees ed25519:<the other's public key>", () =>
    Effect.gen(function*() {
      const serverSeed = randomBytes(32)
      const clientSeed = randomBytes(32)
      const serverFingerprint = `ed25519:${hex(Tls.ed25519PublicKey(serverSeed))}`
      const clientFingerprint = `ed25519:${hex(Tls.ed25519PublicKey(clientSeed))}`
      const { handlers, seen } = yield* recording("test/a", echo())
      const server = yield* endpoint({ identity: Tls.RawKey(serverSeed), handlers })
      expect(server.fingerprint).toBe(serverFingerprint)

      const connection = yield* Quic.connect(server.address, {
        alpn: "test/a",
        identity: Tls.RawKey(clientSeed),
        expectedFingerprint: serverFingerprint
      })
      yield* Effect.flatMap(connection.openBidi, (s) => roundTrip(s, utf8("x")))
      expect(connection.peerFingerprint).toEqual(Option.some(serverFingerprint))
      const accepted = (yield* Ref.get(seen))[0]!
      expect(accepted.peerFingerprint).toEqual(Option.some(clientFingerprint))
      expect(accepted.side).toBe("server")
      expect(accepted.remoteAddress.host).toBe("127.0.0.1")
      expect(accepted.remoteAddress.port).toBeGreaterThan(0)
    }))

  it.scopedLive("a client without an identity presents an ephemeral one and still connects", () =>
    Effect.gen(function*() {
      const { handlers, seen } = yield* recording("test/a", echo())
      const server = yield* endpoint({ handlers })
      const connection = yield* Quic.connect(server.address, { alpn: "test/a", expectedFingerprint: server.fingerprint })
      expect((yield* Effect.flatMap(connection.openBidi, (s) => roundTrip(s, utf8("x")))).toString()).toBe("x")
      expect(Option.getOrThrow((yield* Ref.get(seen))[0]!.peerFingerprint)).toMatch(/^ed25519:[0-9a-f]{64}$/)
    }))

  it.scopedLive("a pinned fingerprint that does not match fails closed", () =>
    Effect.gen(function*() {
      const server = yield* endpoint({ handlers: { "test/a": echo() } })
      const wrong = `ed25519:${hex(Tls.ed25519PublicKey(randomBytes(32)))}`
      const error = yield* Effect.flip(Quic.connect(server.address, { alpn: "test/a", expectedFingerprint: wrong }))
      expect(error.reason).toBe("FingerprintMismatch")
      expect(error.message).toBe(
        `server 127.0.0.1:${server.address.port} presented ${server.fingerprint}, which is not the pinned ${wrong}`
      )
    }))

  it.scopedLive("an unknown Ed25519 self-signed server fails closed", () =>
    Effect.gen(function*() {
      const { handlers, seen } = yield* recording("test/a", echo())
      const server = yield* endpoint({ identity: Tls.RawKey(randomBytes(32)), handlers })
      const files = yield* caFiles
      // A failed handshake takes the library ~3 s to wind down: try both ways at once.
      const [error, again] = yield* Effect.all([
        Effect.flip(Quic.connect(server.address, { alpn: "test/a" })),
        // A CA bundle that does not hold it changes nothing.
        Effect.flip(Quic.connect(server.address, { alpn: "test/a", ca: files.caPem }))
      ], { concurrency: "unbounded" })
      expect(error.reason).toBe("Untrusted")
      expect(error.message).toContain("pin its fingerprint")
      expect(again.reason).toBe("Untrusted")
      expect(yield* Ref.get(seen)).toEqual([])
    }))

  it.scopedLive("an unknown X.509 server is verified against the CA and its name", () =>
    Effect.gen(function*() {
      const files = yield* caFiles
      const server = yield* endpoint({ identity: Tls.X509(files.certFile, files.keyFile), handlers: { "test/a": echo() } })
      const connection = yield* Quic.connect(server.address, { alpn: "test/a", ca: files.caPem, serverName: "localhost" })
      expect(connection.peerFingerprint).toEqual(Tls.fingerprint(files.leafDer))
      expect(Option.getOrThrow(connection.peerFingerprint)).toMatch(/^SHA256:[0-9a-f]{64}$/)
      expect((yield* Effect.flatMap(connection.openBidi, (s) => roundTrip(s, utf8("ca")))).toString()).toBe("ca")

      const [wrongName, noCa] = yield* Effect.all([
        Effect.flip(Quic.connect(server.address, { alpn: "test/a", ca: files.caPem, serverName: "example.com" })),
        Effect.flip(Quic.connect(server.address, { alpn: "test/a", serverName: "localhost" }))
      ], { concurrency: "unbounded" })
      expect(wrongName.reason).toBe("Untrusted")
      expect(noCa.reason).toBe("Untrusted")
      // Pinning the X.509 fingerprint works without any CA.
      const pinned = yield* Quic.connect(server.address, { alpn: "test/a", expectedFingerprint: server.fingerprint })
      expect(pinned.peerFingerprint).toEqual(Option.some(server.fingerprint))
    }))

  it.scopedLive("echoes bytes on bidirectional streams opened by either side", () =>
    Effect.gen(function*() {
      const payload = randomBytes(300 * 1024)
      const fromServer = yield* Deferred.make<Buffer, TransportError>()
      const server = yield* endpoint({
        handlers: {
          "test/a": (connection) =>
            Effect.gen(function*() {
              yield* Effect.forkScoped(acceptEach(echoStream(""))(connection))
              // The server opens a stream too; the client echoes it.
              const stream = yield* connection.openBidi
              yield* Deferred.complete(fromServer, roundTrip(stream, payload))
              yield* Effect.never
            }).pipe(Effect.catchAll(() => Effect.void))
        }
      })
      const connection = yield* Quic.connect(server.address, { alpn: "test/a", expectedFingerprint: server.fingerprint })
      yield* Effect.forkScoped(acceptEach(echoStream(""))(connection))
      const answer = yield* Effect.flatMap(connection.openBidi, (s) => roundTrip(s, payload))
      expect(answer.equals(payload)).toBe(true)
      expect((yield* Deferred.await(fromServer)).equals(payload)).toBe(true)
    }))

  it.scopedLive("a peer's force-closed stream fails cleanly; the node keeps serving; no unhandled rejection", () =>
    Effect.gen(function*() {
      const unhandled: Array<unknown> = []
      const onUnhandled = (reason: unknown) => void unhandled.push(reason)
      yield* Effect.acquireRelease(
        Effect.sync(() => process.on("unhandledRejection", onUnhandled)),
        () => Effect.sync(() => process.off("unhandledRejection", onUnhandled))
      )
      // "test/reset": read one chunk, then reset the stream in both directions.
      const server = yield* endpoint({
        handlers: {
          "test/reset": acceptEach((stream) =>
            Effect.zipRight(stream.read, stream.reset).pipe(Effect.catchAll(() => Effect.void))
          ),
          "test/a": echo()
        }
      })
      const victim = yield* Quic.connect(server.address, { alpn: "test/reset", expectedFingerprint: server.fingerprint })
      const stream = yield* victim.openBidi
      yield* stream.write(utf8("first"))
      const failed = yield* Effect.flip(stream.read)
      expect(failed.reason).toBe("Reset")
      expect(failed.message).toMatch(/stream (reset|stopped) by peer/)
      // Later writes fail too, typed.
      const writeFailure = yield* stream.write(utf8("more")).pipe(
        Effect.zipRight(Effect.sleep("20 millis")),
        Effect.zipRight(stream.write(utf8("more"))),
        Effect.flip
      )
      expect(["Reset", "Io"]).toContain(writeFailure.reason)
      // The same connection opens another stream and gets reset again, the connection itself is fine.
      const second = yield* victim.openBidi
      yield* second.write(utf8("again"))
      expect((yield* Effect.flip(second.read)).reason).toBe("Reset")
      // Another connection works.
      const other = yield* Quic.connect(server.address, { alpn: "test/a", expectedFingerprint: server.fingerprint })
      expect((yield* Effect.flatMap(other.openBidi, (s) => roundTrip(s, utf8("ok")))).toString()).toBe("ok")
      // Let any stray promise settle before looking.
      yield* Effect.sleep("50 millis")
      expect(unhandled).toEqual([])
    }))

  it.scopedLive("a client without a certificate is refused in the handshake (TLS alert 116), unless the endpoint ignores client certificates", () =>
    Effect.gen(function*() {
      const { handlers, seen } = yield* recording("test/a", echo())
      const server = yield* endpoint({ handlers })
      const refused = yield* Effect.flip(
        Effect.flatMap(stockClient(server.address, { verifyPeer: false, applicationProtos: ["test/a"] }), (client) =>
          stockRoundTrip(client, "x"))
      )
      expect(String(refused)).toContain("code 372") // 0x100 + 116, certificate_required
      expect(yield* Ref.get(seen)).toEqual([])

      const open = yield* recording("test/a", echo())
      const lenient = yield* endpoint({ handlers: open.handlers, clientCertificates: "ignored" })
      const client = yield* stockClient(lenient.address, { verifyPeer: false, applicationProtos: ["test/a"] })
      expect((yield* stockRoundTrip(client, "no cert")).toString()).toBe("no cert")
      expect((yield* Ref.get(open.seen))[0]!.peerFingerprint).toEqual(Option.none())
      // Our own client still connects to it (its certificate is simply not asked for).
      const connection = yield* Quic.connect(lenient.address, { alpn: "test/a", expectedFingerprint: lenient.fingerprint })
      expect((yield* Effect.flatMap(connection.openBidi, (s) => roundTrip(s, utf8("ok")))).toString()).toBe("ok")
    }))

  it.scopedLive("a client without a certificate calls with a bearer token, and is anonymous without one", () =>
    Effect.gen(function*() {
      const whoami = Operation.query({
        name: "t/whoami",
        input: Schema.Unknown,
        output: Schema.NullOr(Schema.String),
        handler: (_, ctx) => Effect.succeed(Option.getOrNull(Option.map(ctx.identity, (identity) => identity.id)))
      })
      const registry = yield* OperationRegistry.make([whoami])
      const serve: CallProtocol.ServeOptions = {
        source: registry.source,
        authenticator: {
          resolveFingerprint: () => Effect.succeed(Option.some({ id: "by-certificate", scopes: [], resources: {} })),
          resolveToken: (token) =>
            Effect.succeed(
              Redacted.value(token) === "alk_good" ? Option.some({ id: "token-user", scopes: [], resources: {} }) : Option.none()
            )
        }
      }
      const server = yield* endpoint({ handlers: { [CallProtocol.ALPN]: CallProtocol.handler(serve) }, clientCertificates: "ignored" })
      // A third-party QUIC client (the stock library) with no certificate, speaking the call protocol by hand.
      const client = yield* stockClient(server.address, { verifyPeer: false, applicationProtos: [CallProtocol.ALPN] })
      const whoIs = (token?: string) =>
        Effect.map(
          stockRoundTrip(client, Codec.encodeFrame({
            type: "call.requested",
            id: "req-1",
            payload: { operationId: "/t/whoami", input: null, ...(token === undefined ? {} : { auth_token: token }) }
          })),
          (bytes) => new Codec.FrameDecoder().push(bytes)
        )
      expect(yield* whoIs("alk_good")).toEqual([{ type: "call.responded", id: "req-1", payload: { output: "token-user" } }])
      expect(yield* whoIs()).toEqual([{ type: "call.responded", id: "req-1", payload: { output: null } }])
      // an unknown token falls back to the connection's identity: none without a certificate
      expect(yield* whoIs("alk_wrong")).toEqual([{ type: "call.responded", id: "req-1", payload: { output: null } }])
    }))

  it.live("closing the endpoint drains in-flight streams, then forces what is left", () =>
    Effect.gen(function*() {
      const received = yield* Deferred.make<void>()
      // Answers each request after a pause: a request in flight when shutdown starts.
      const slow: ProtocolHandler = acceptEach((stream) =>
        Effect.gen(function*() {
          const request = yield* stream.read
          yield* Deferred.succeed(received, undefined)
          yield* Effect.sleep("150 millis")
          yield* stream.write(Option.getOrThrow(request))
          yield* stream.end
        }).pipe(Effect.catchAll(() => stream.reset))
      )
      const stuck: ProtocolHandler = acceptEach((stream) => Effect.zipRight(stream.read, Effect.never).pipe(Effect.ignore))

      yield* Effect.gen(function*() {
        const serverScope = yield* Scope.make()
        const server = yield* Scope.extend(endpoint({ handlers: { "test/slow": slow } }), serverScope)
        const connection = yield* Quic.connect(server.address, { alpn: "test/slow", expectedFingerprint: server.fingerprint })
        const stream = yield* connection.openBidi
        yield* stream.write(utf8("in flight"))
        yield* stream.end
        yield* Deferred.await(received)
        const shutdown = yield* Effect.fork(Scope.close(serverScope, Exit.void))
        expect((yield* readAll(stream)).toString()).toBe("in flight")
        yield* Fiber.join(shutdown)
        expect((yield* connection.closed).by).toBe("peer")
      }).pipe(Effect.scoped)

      yield* Effect.gen(function*() {
        const serverScope = yield* Scope.make()
        const server = yield* Scope.extend(
          endpoint({ handlers: { "test/stuck": stuck }, drainTimeout: "200 millis" }),
          serverScope
        )
        const connection = yield* Quic.connect(server.address, { alpn: "test/stuck", expectedFingerprint: server.fingerprint })
        const stream = yield* connection.openBidi
        yield* stream.write(utf8("never answered"))
        yield* Effect.sleep("20 millis")
        expect(yield* server.connections).toBe(1)
        yield* Scope.close(serverScope, Exit.void)
        const error = yield* Effect.flip(readAll(stream))
        expect(["Reset", "Closed"]).toContain(error.reason)
        expect(yield* server.connections).toBe(0)
      }).pipe(Effect.scoped)
    }))

  it.live("leaves no connections, handler fibers or sockets behind", () =>
    Effect.gen(function*() {
      const before = udpSockets()
      const running = yield* Ref.make(0)
      const counted: ProtocolHandler = (connection) =>
        Effect.acquireRelease(Ref.update(running, (n) => n + 1), () => Ref.update(running, (n) => n - 1)).pipe(
          Effect.zipRight(echo()(connection))
        )
      yield* Effect.gen(function*() {
        const server = yield* endpoint({ handlers: { "test/a": counted } })
        for (let i = 0; i < 3; i++) {
          yield* Effect.gen(function*() {
            const connection = yield* Quic.connect(server.address, { alpn: "test/a", expectedFingerprint: server.fingerprint })
            yield* Effect.flatMap(connection.openBidi, (s) => roundTrip(s, utf8("x")))
            // Leave one stream open and unfinished when the client goes away.
            yield* Effect.flatMap(connection.openBidi, (s) => s.write(utf8("dangling")))
          }).pipe(Effect.scoped)
        }
        // The server notices each client close promptly.
        yield* Effect.repeat(server.connections, { until: (n) => n === 0, schedule: Schedule.spaced("10 millis"), times: 200 })
        expect(yield* server.connections).toBe(0)
        expect(yield* Ref.get(running)).toBe(0)
      }).pipe(Effect.scoped)
      expect(udpSockets()).toBe(before)
    }))
})

/** Start `peer-process.ts` (a QUIC endpoint in another process); killed with SIGKILL when the scope closes. */
const peerProcess = (tuning: Partial<Quic.Tuning>) =>
  Effect.gen(function*() {
    const proc = yield* Effect.acquireRelease(
      Effect.sync(() =>
        child.spawn(process.execPath, ["--import", "tsx", PEER_PROCESS, JSON.stringify(tuning)], {
          stdio: ["ignore", "pipe", "inherit"]
        })
      ),
      (proc) => Effect.sync(() => proc.exitCode === null && proc.kill("SIGKILL"))
    )
    const info = yield* Effect.async<{ port: number; fingerprint: string }>((resume) => {
      let buffered = ""
      proc.stdout!.on("data", (data: Buffer) => {
        buffered += data.toString("utf8")
        const line = buffered.indexOf("\n")
        if (line >= 0) resume(Effect.succeed(JSON.parse(buffered.slice(0, line))))
      })
    })
    return { proc, ...info }
  })

describe("Quic liveness and interoperability", () => {
  it.scopedLive("a peer killed with SIGKILL is noticed by the idle timeout: pending reads fail 'connection lost'", () =>
    Effect.gen(function*() {
      // Short timeouts keep the test quick; the mechanism (keep-alive PINGs unanswered → idle close) is the default's.
      const tuning = { maxIdleTimeout: 1_000, keepAliveIntervalTime: 300 }
      const peer = yield* peerProcess(tuning)
      const connection = yield* Quic.connect({ host: "127.0.0.1", port: peer.port }, {
        alpn: "test/hold",
        expectedFingerprint: peer.fingerprint,
        tuning
      })
      const stream = yield* connection.openBidi
      yield* stream.write(utf8("waiting for an answer that never comes"))
      const pending = yield* Effect.fork(stream.read)
      peer.proc.kill("SIGKILL")
      const failure = yield* Effect.flip(Fiber.join(pending))
      expect(failure.reason).toBe("Closed")
      expect(failure.message).toContain("connection lost")
      expect((yield* connection.closed).by).toBe("idle")
    }), { timeout: 30_000 })

  it.scopedLive("a handshake with a certificate the client does not trust fails at once (no wind-down wait)", () =>
    Effect.gen(function*() {
      const server = yield* endpoint({ handlers: { "test/a": echo() } })
      const wrong = `ed25519:${hex(Tls.ed25519PublicKey(randomBytes(32)))}`
      const started = performance.now()
      const error = yield* Effect.flip(Quic.connect(server.address, { alpn: "test/a", expectedFingerprint: wrong }))
      expect(error.reason).toBe("FingerprintMismatch")
      // Far below the library's ~3 s: the failure is reported when the handshake fails, not after draining.
      expect(performance.now() - started).toBeLessThan(2_500)
    }))

  it.scopedLive("interrupting a connect that gets no answer ends it at once, not at its timeout", () =>
    Effect.gen(function*() {
      // a UDP port nobody listens on: the handshake gets no answer
      const port = yield* Effect.promise(() =>
        new Promise<number>((resolve) => {
          const socket = dgram.createSocket("udp4")
          socket.bind(0, "127.0.0.1", () => {
            const bound = socket.address().port
            socket.close(() => resolve(bound))
          })
        })
      )
      const connecting = yield* Effect.fork(Effect.scoped(
        Quic.connect({ host: "127.0.0.1", port }, { alpn: "test/a", connectTimeout: "10 minutes" })
      ))
      yield* Effect.sleep("100 millis")
      // a scope closing while a link reconnects: the interruption must not wait the 10 minutes
      const started = performance.now()
      const exit = yield* Fiber.interrupt(connecting)
      expect(Exit.isInterrupted(exit)).toBe(true)
      // without an interruptible connect this waited for the handshake to give up (the 10 s idle timeout)
      expect(performance.now() - started).toBeLessThan(5_000)
    }))

  it.scopedLive("interoperates with a stock @matrixai/quic 2.0.9 client (with a certificate) and server", () =>
    Effect.gen(function*() {
      // Stock client → our endpoint; it presents a certificate, so it has a fingerprint here.
      const files = yield* caFiles
      const { handlers, seen } = yield* recording("test/a", echo("ours:"))
      const server = yield* endpoint({ handlers })
      const clientCredentials = yield* Tls.load(Tls.RawKey(randomBytes(32)))
      const client = yield* stockClient(server.address, {
        verifyPeer: false,
        key: Redacted.value(clientCredentials.privateKeyPem),
        cert: clientCredentials.certificatePem,
        applicationProtos: ["test/a"]
      })
      const answers = yield* Effect.forEach(Array.from({ length: 20 }, (_, i) => `call ${i}`), (text) =>
        stockRoundTrip(client, text), { concurrency: "unbounded" })
      expect(answers.map((b) => b.toString())).toEqual(Array.from({ length: 20 }, (_, i) => `ours:call ${i}`))
      expect((yield* Ref.get(seen))[0]!.peerFingerprint).toEqual(Option.some(clientCredentials.fingerprint))

      // Our client → a stock server (stateless retry, its own stream handling), verified by CA and name.
      const stock = yield* Effect.acquireRelease(
        Effect.promise(async () => {
          const s = new QUICServer({
            crypto: {
              key: new Uint8Array(randomBytes(32)).buffer,
              ops: {
                sign: async (key: ArrayBuffer, data: ArrayBuffer) =>
                  new Uint8Array(createHmac("sha256", Buffer.from(key)).update(Buffer.from(data)).digest()).buffer,
                verify: async (key: ArrayBuffer, data: ArrayBuffer, sig: ArrayBuffer) =>
                  createHmac("sha256", Buffer.from(key)).update(Buffer.from(data)).digest().equals(Buffer.from(sig))
              }
            },
            config: {
              key: readFileSync(files.keyFile, "utf8"),
              cert: readFileSync(files.certFile, "utf8"),
              verifyPeer: false,
              applicationProtos: ["test/stock"]
            },
            logger: new Logger("test/stock-server", LogLevel.SILENT)
          })
          s.addEventListener(events.EventQUICServerConnection.name, ((event: events.EventQUICServerConnection) => {
            event.detail.addEventListener(events.EventQUICConnectionStream.name, ((e: events.EventQUICConnectionStream) => {
              const stream = e.detail
              void (async () => {
                const chunks: Array<Uint8Array> = []
                for await (const chunk of stream.readable) chunks.push(chunk)
                const writer = stream.writable.getWriter()
                await writer.write(Buffer.concat([Buffer.from("stock:"), ...chunks]))
                await writer.close()
              })().catch(() => undefined)
            }) as never)
          }) as never)
          await s.start({ host: "127.0.0.1", port: 0 })
          return s
        }),
        (s) => Effect.promise(() => s.stop({ force: true }).catch(() => undefined))
      )
      const connection = yield* Quic.connect({ host: "127.0.0.1", port: stock.port }, {
        alpn: "test/stock",
        ca: files.caPem,
        serverName: "localhost"
      })
      const replies = yield* Effect.forEach(Array.from({ length: 20 }, (_, i) => `req ${i}`), (text) =>
        Effect.flatMap(connection.openBidi, (s) => roundTrip(s, utf8(text))), { concurrency: "unbounded" })
      expect(replies.map((b) => b.toString())).toEqual(Array.from({ length: 20 }, (_, i) => `stock:req ${i}`))
    }))
})
