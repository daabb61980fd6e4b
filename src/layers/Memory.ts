/**
 * An in-process network for nodes and clients in one program (tests, examples, embedding): a listener layer and a
 * dialer layer over the same `Network`, speaking the call protocol over in-memory connections (`call/InMemoryTransport`,
 * the same framing and engine as QUIC, with real backpressure). No sockets, no TLS, no native code.
 *
 * - `layerNetwork`: the network (one per program or test);
 * - `layerListener({ name? })`: serves a `Node` at `memory://NAME:N` (N counts up per network, like port 0);
 * - `layerDialer`: a `CallClient.Dialer` for `memory://` addresses.
 *
 * Identity is modelled on TLS: the client learns the node's fingerprint and must pin it (`expectedFingerprint`; an
 * unpinned or wrong pin fails as over QUIC), and the node sees the client's fingerprint when the client presents a
 * TLS identity (`credentials.identity`), so peers resolve by fingerprint as they would over QUIC.
 */
import { Context, Effect, Layer, Option } from "effect"
import * as InMemoryTransport from "../call/InMemoryTransport.js"
import * as StreamTransport from "../call/StreamTransport.js"
import * as EndpointError from "../errors/EndpointError.js"
import { compact } from "../internal/compact.js"
import { Dialer, formatAddress } from "../services/CallClient.js"
import * as CallProtocol from "../services/CallProtocol.js"
import type { Connection } from "../services/Endpoint.js"
import * as Tls from "../services/Tls.js"
import { Node, NodeError } from "./Node.js"

interface Listening {
  readonly fingerprint: string
  /** Serve one accepted connection in the listener's scope. */
  readonly accept: (connection: Connection) => Effect.Effect<void>
}

/** The in-process network: who listens where. */
export class Network extends Context.Tag("alknet/MemoryNetwork")<Network, {
  readonly listeners: Map<string, Listening>
  readonly nextPort: () => number
}>() {}

/** A fresh network. */
export const layerNetwork: Layer.Layer<Network> = Layer.sync(Network, () => {
  let port = 0
  return Network.of({ listeners: new Map(), nextPort: () => ++port })
})

const key = (host: string, port: number) => `${host}:${port}`

/** Serve the node on the network at `memory://NAME:N` for the layer's life (closing it interrupts its connections). */
export const layerListener = (
  options: { readonly name?: string } = {}
): Layer.Layer<never, NodeError, Node | Network> =>
  Layer.scopedDiscard(Effect.gen(function*() {
    const node = yield* Node
    const network = yield* Network
    const scope = yield* Effect.scope
    const host = options.name ?? "node"
    if (!/^[a-z0-9-]+$/.test(host)) {
      return yield* new NodeError({ reason: "Listen", message: `memory listener name ${JSON.stringify(host)}: use a-z, 0-9, -` })
    }
    const port = network.nextPort()
    const handler = CallProtocol.handler(node.serve, "memory")
    const accept = (connection: Connection) =>
      Effect.asVoid(Effect.forkIn(
        Effect.scoped(Effect.ensuring(handler(connection), connection.close())),
        scope
      ))
    yield* Effect.acquireRelease(
      Effect.sync(() => network.listeners.set(key(host, port), { fingerprint: node.fingerprint, accept })),
      () => Effect.sync(() => network.listeners.delete(key(host, port)))
    )
    yield* node.addTransport({ kind: "memory", address: formatAddress({ scheme: "memory", host, port }) })
  }))

/** Dials `memory://` addresses on the network. */
export const dialer: Effect.Effect<Dialer["Type"], never, Network> = Effect.map(Network, (network) =>
  Dialer.of({
    schemes: ["memory"],
    dial: (address, options) =>
      Effect.gen(function*() {
        const target = formatAddress(address)
        const listening = network.listeners.get(key(address.host, address.port))
        if (listening === undefined) {
          return yield* Effect.fail(EndpointError.make("Connect", `cannot connect to ${target}: nothing listens there`))
        }
        const pinned = options.expectedFingerprint === undefined
          ? []
          : typeof options.expectedFingerprint === "string"
          ? [options.expectedFingerprint]
          : options.expectedFingerprint
        if (pinned.length === 0) {
          return yield* Effect.fail(EndpointError.make(
            "Untrusted",
            `the identity of ${target} is not trusted; pin its fingerprint with expectedFingerprint`
          ))
        }
        if (!pinned.includes(listening.fingerprint)) {
          return yield* Effect.fail(EndpointError.make(
            "FingerprintMismatch",
            `server ${target} presented ${listening.fingerprint}, which is not the pinned ${pinned.join(" or ")}`
          ))
        }
        const ours = options.identity === undefined
          ? Option.none<string>()
          : Option.some((yield* Effect.mapError(
            Tls.load(options.identity),
            (e) => EndpointError.make("Config", `client identity: ${e.message}`)
          )).fingerprint)
        const [client, server] = yield* InMemoryTransport.makeConnectionPair()
        yield* listening.accept({ ...server, peerFingerprint: ours })
        return {
          transport: StreamTransport.make(
            { ...client, peerFingerprint: Option.some(listening.fingerprint) },
            compact({ maxFrameBytes: options.maxFrameBytes })
          ),
          peerFingerprint: Option.some(listening.fingerprint)
        }
      })
  }))

/** A client (or a node's outbound links) that dials the in-process network. */
export const layerDialer: Layer.Layer<Dialer, never, Network> = Layer.effect(Dialer, dialer)
