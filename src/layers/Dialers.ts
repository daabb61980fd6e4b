/**
 * The transports a client dials, as layers of `CallClient.Dialer` (SPEC §9): choose them by layer, as an
 * `@effect/rpc` client chooses its `RpcClient.Protocol`.
 *
 * - `layerQuic`: `quic://HOST:PORT` over @matrixai/quic (loaded the first time it dials, see `quic/Lazy`);
 * - `layerWebSocket`: `ws://` and `wss://`;
 * - `layer`: both — what `Node.layerMemory`, `Node.layerHome` and the default `CallClient.connect` of `layers/Client`
 *   use.
 */
import { Effect, Layer } from "effect"
import * as StreamTransport from "../call/StreamTransport.js"
import { compact } from "../internal/compact.js"
import { ALPN } from "../services/CallProtocol.js"
import { combineDialers, Dialer, formatAddress } from "../services/CallClient.js"
import * as Quic from "./quic/Lazy.js"
import * as WebSocket from "./ws/WebSocket.js"

/** Dials `quic://` addresses: one bidirectional stream per call, ALPN `alknet/call`. */
export const quic: Dialer["Type"] = Dialer.of({
  schemes: ["quic"],
  dial: (address, options) =>
    Effect.map(
      Quic.connect({ host: address.host, port: address.port }, {
        alpn: ALPN,
        ...compact({
          identity: options.identity,
          expectedFingerprint: options.expectedFingerprint,
          ca: options.ca,
          serverName: options.serverName,
          connectTimeout: options.connectTimeout
        })
      }),
      (connection) => ({
        transport: StreamTransport.make(connection, compact({ maxFrameBytes: options.maxFrameBytes })),
        peerFingerprint: connection.peerFingerprint
      })
    )
})

/** Dials `ws://` and `wss://` addresses: one envelope per binary message; the bearer token rides on the upgrade. */
export const webSocket: Dialer["Type"] = Dialer.of({
  schemes: ["ws", "wss"],
  dial: (address, options) =>
    Effect.map(
      WebSocket.connect(formatAddress(address), compact({
        identity: options.identity,
        expectedFingerprint: options.expectedFingerprint,
        ca: options.ca,
        serverName: options.serverName,
        connectTimeout: options.connectTimeout,
        authToken: options.token,
        maxFrameBytes: options.maxFrameBytes
      })),
      (connected) => ({ transport: connected.transport, peerFingerprint: connected.peerFingerprint })
    )
})

/** QUIC and WebSocket. */
export const both: Dialer["Type"] = combineDialers(quic, webSocket)

/** A client that dials QUIC only (a `ws://` address fails with a `Config` error naming what it dials). */
export const layerQuic: Layer.Layer<Dialer> = Layer.succeed(Dialer, quic)

/** A client that dials WebSocket only (no QUIC, so @matrixai/quic is never loaded). */
export const layerWebSocket: Layer.Layer<Dialer> = Layer.succeed(Dialer, webSocket)

/** A client that dials QUIC and WebSocket. */
export const layer: Layer.Layer<Dialer> = Layer.succeed(Dialer, both)
