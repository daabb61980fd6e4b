/**
 * The node's configuration as the running program sees it (SPEC §11): the static part, fixed for the process's
 * life, and the dynamic part (peers, API keys, rate limits), which may change while it runs.
 *
 * Layers: {@link layerStatic} (fixed values, e.g. with a memory or SQLite identity store) and the config file
 * (`layers/ConfigFile`), which reloads the dynamic part when the file changes. Nothing on the wire can change it.
 */
import { Context, Effect, Layer, Schema, Stream, SubscriptionRef } from "effect"
import { Config, DynamicConfig, split, StaticConfig } from "../schema/Config.js"

export interface Service {
  readonly static: StaticConfig
  /** The dynamic part in force now. */
  readonly dynamic: Effect.Effect<DynamicConfig>
  /** The dynamic part in force now, then each one that replaces it. */
  readonly changes: Stream.Stream<DynamicConfig>
}

export class NodeConfig extends Context.Tag("alknet/NodeConfig")<NodeConfig, Service>() {}

/** A service over a `SubscriptionRef` holding the dynamic part (the config-file layer swaps it on reload). */
export const fromRef = (staticConfig: StaticConfig, ref: SubscriptionRef.SubscriptionRef<DynamicConfig>): Service => ({
  static: staticConfig,
  dynamic: SubscriptionRef.get(ref),
  changes: ref.changes
})

/**
 * Fixed configuration, from the same JSON shape as the config file (`{}` gives every default). Invalid input is a
 * bug in the calling code: the layer dies with the decode error.
 */
export const layerStatic = (config: typeof Config.Encoded = {}): Layer.Layer<NodeConfig> =>
  Layer.effect(
    NodeConfig,
    Effect.gen(function*() {
      const { dynamic, static: staticConfig } = split(Schema.decodeSync(Config)(config))
      return fromRef(staticConfig, yield* SubscriptionRef.make<DynamicConfig>(dynamic))
    })
  )
