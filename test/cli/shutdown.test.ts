/**
 * SIGTERM while peers are stuck in the middle of a frame: the node drains for its drain timeout, then stops anyway.
 * (Reported: a node kept running 40 s after SIGTERM when a client had dropped in the middle of 60 MiB frames.) The
 * hostile peers here leave half-sent frames on both transports: a WebSocket frame announcing 60 MiB of which 5 MiB
 * arrive, and a QUIC stream whose frame header announces 60 MiB; then they vanish without closing anything.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Tls from "node:tls"
import * as Quic from "../../src/layers/quic/Quic.js"
import * as CallProtocol from "../../src/services/CallProtocol.js"
import * as Cli from "./cli.js"

/** Open a WebSocket by hand and send the first 5 MiB of a 60 MiB binary frame; the socket is left as it is. */
const halfSentWebSocketFrame = (url: string) =>
  Effect.async<Tls.TLSSocket>((resume) => {
    const { hostname, port } = new URL(url)
    const socket = Tls.connect({ host: hostname, port: Number(port), rejectUnauthorized: false })
    socket.on("error", () => undefined)
    socket.once("secureConnect", () => {
      socket.write(
        "GET /alknet/call HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
      )
      socket.once("data", () => {
        const header = Buffer.alloc(14)
        header[0] = 0x82 // FIN, binary
        header[1] = 0x80 | 127 // masked, 64-bit length
        header.writeBigUInt64BE(BigInt(60 * 1024 * 1024), 2)
        header.writeUInt32BE(0x01020304, 10)
        socket.write(header)
        for (let i = 0; i < 5; i++) socket.write(Buffer.alloc(1024 * 1024, 1))
        resume(Effect.succeed(socket))
      })
    })
  })

describe("alknet node shutdown", () => {
  it.live("SIGTERM with half-sent frames on QUIC and WebSocket: the node stops within drain + grace", () =>
    Effect.gen(function*() {
      const dir = yield* Cli.tempDir
      const { home } = yield* Cli.initHomeInProcess(dir, "node")
      const node = yield* Cli.startNode(home, ["--ws-listen", "127.0.0.1:0"])
      const sockets = yield* Effect.all([1, 2, 3].map(() => halfSentWebSocketFrame(node.ws!)))
      const { hostname, port } = new URL(node.quic)
      const quic = yield* Quic.connect(
        { host: hostname, port: Number(port) },
        { alpn: CallProtocol.ALPN, expectedFingerprint: node.fingerprint }
      )
      const stream = yield* quic.openBidi
      const header = Buffer.alloc(4)
      header.writeUInt32BE(60 * 1024 * 1024, 0)
      yield* stream.write(header)
      yield* stream.write(Buffer.alloc(1024 * 1024, 1))
      const started = Date.now()
      yield* node.signal("SIGTERM")
      const code = yield* node.exited
      // drain timeout 2 s + the forced exit's grace of 3 s, with room for a slow machine
      expect(Date.now() - started).toBeLessThan(15_000)
      expect(code === 0 || code === 1).toBe(true)
      for (const socket of sockets) socket.destroy()
    }).pipe(Effect.scoped), { timeout: 120_000 })
})
