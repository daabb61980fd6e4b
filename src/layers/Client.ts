/**
 * `CallClient` with its transports: everything of `services/CallClient`, with a `connect` and a `layer` that need
 * nothing — they dial through the `Dialer` in context when there is one (a QUIC-only or WebSocket-only client, the
 * in-process `Memory` network) and through both QUIC and WebSocket (`Dialers.both`) otherwise. This is the
 * `CallClient` of the public API; `services/CallClient` is the backend-free one (its `connect` requires a `Dialer`).
 */
import { Effect, Layer, Option } from "effect"
import type { Scope } from "effect"
import type * as EndpointError from "../errors/EndpointError.js"
import * as CallClient from "../services/CallClient.js"
import * as Dialers from "./Dialers.js"

export * from "../services/CallClient.js"

/** The `Dialer` in context, or QUIC and WebSocket when there is none. */
const dialerOrBoth = Effect.map(Effect.serviceOption(CallClient.Dialer), Option.getOrElse(() => Dialers.both))

/**
 * `CallClient` as a service needing nothing: over the `Dialer` in context when the layer is built with one, else
 * over QUIC and WebSocket.
 */
export const layer: Layer.Layer<CallClient.CallClient> = Layer.effect(
  CallClient.CallClient,
  Effect.map(dialerOrBoth, (dialer) =>
    CallClient.CallClient.of({
      connect: (address, credentials, options) =>
        Effect.provideService(CallClient.connect(address, credentials, options), CallClient.Dialer, dialer)
    }))
)

/**
 * Connect to `address` (`quic://`, `ws://`, `wss://`) through the `Dialer` in context, or QUIC and WebSocket when none
 * is provided. See `services/CallClient.connect`.
 */
export const connect = (
  address: string,
  credentials: CallClient.Credentials = {},
  options: CallClient.ConnectOptions = {}
): Effect.Effect<CallClient.ClientConnection, EndpointError.EndpointError, Scope.Scope> =>
  Effect.flatMap(dialerOrBoth, (dialer) =>
    Effect.provideService(CallClient.connect(address, credentials, options), CallClient.Dialer, dialer))
