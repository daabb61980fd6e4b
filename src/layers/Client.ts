/**
 * `CallClient` with its transports: everything of `services/CallClient`, and a `connect` that needs no layer — it
 * dials through the `Dialer` in context when there is one (a QUIC-only or WebSocket-only client, a test transport)
 * and through both QUIC and WebSocket (`Dialers.both`) otherwise. This is the `CallClient` of the public API.
 */
import { Effect, Layer, Option } from "effect"
import type { Scope } from "effect"
import type * as EndpointError from "../errors/EndpointError.js"
import * as CallClient from "../services/CallClient.js"
import * as Dialers from "./Dialers.js"

export * from "../services/CallClient.js"

/** `CallClient.layer` over QUIC and WebSocket: the client as a service, needing nothing. */
export const layerDefault: Layer.Layer<CallClient.CallClient | CallClient.Dialer> = Layer.provideMerge(
  CallClient.layer,
  Dialers.layer
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
  Effect.flatMap(Effect.serviceOption(CallClient.Dialer), (dialer) =>
    Effect.provideService(
      CallClient.connect(address, credentials, options),
      CallClient.Dialer,
      Option.getOrElse(dialer, () => Dialers.both)
    ))
