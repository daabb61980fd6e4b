/**
 * The QUIC transport as the rest of alknet and the package's users reach it (`Quic` in `alknet`): the functions of
 * `./Quic.ts`, which is loaded — and with it @matrixai/quic and its native addon — the first time one of them runs.
 * Importing `alknet` therefore loads no native code, and a program that never listens on or dials QUIC never loads
 * the library at all.
 *
 * Keep it that way: outside this folder, import `./Quic.js` for types only (`import type`), and reach its functions
 * through this module.
 */
import { Effect, Layer } from "effect"
import * as EndpointError from "../../errors/EndpointError.js"
import { Endpoint } from "../../services/Endpoint.js"
import type * as Quic from "./Quic.js"

export type { ConnectOptions, EndpointOptions } from "./Quic.js"
export { defaultTuning } from "./Tuning.js"
export type { Tuning } from "./Tuning.js"

/** The implementation once loaded: later calls take it as is (a dynamic `import()` costs a loader round trip each time). */
let loaded: typeof Quic | undefined

/** Load the implementation once; a platform without the addon gets a typed error. */
const load = (reason: "Bind" | "Connect"): Effect.Effect<typeof Quic, EndpointError.EndpointError> =>
  loaded !== undefined ? Effect.succeed(loaded) : Effect.tryPromise({
    try: () =>
      import("./Quic.js").then((quic) => {
        loaded = quic
        return quic
      }),
    catch: (error) =>
      EndpointError.make(
        reason,
        `QUIC is not available: @matrixai/quic cannot be loaded (${error instanceof Error ? error.message : String(error)})`
      )
  })

/**
 * A QUIC endpoint: listens while the scope is open. Closing the scope stops accepting, drains open streams for up
 * to `drainTimeout`, then resets them, closes every connection and interrupts their handlers.
 */
export const makeEndpoint: typeof Quic.makeEndpoint = (options) =>
  Effect.flatMap(load("Bind"), (quic) => quic.makeEndpoint(options))

/** The `Endpoint` service over QUIC. */
export const layerEndpoint: typeof Quic.layerEndpoint = (options) => Layer.scoped(Endpoint, makeEndpoint(options))

/**
 * Open a QUIC connection to `address`, verified by what the caller knows (SPEC §3): a pinned `expectedFingerprint`
 * must match; without a pin the certificate must pass CA verification, so an unknown self-signed server fails
 * closed. The connection lives until the scope closes or either side closes it.
 */
export const connect: typeof Quic.connect = (address, options) =>
  Effect.flatMap(load("Connect"), (quic) => quic.connect(address, options))
