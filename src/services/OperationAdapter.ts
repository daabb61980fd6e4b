/**
 * An adapter turns what another system offers into registrations this node can route to (SPEC §14):
 * `from_call` (another alknet node, `peer/FromCall.ts`); later `from_openapi`, `from_mcp`, `from_jsonschema`.
 *
 * What an adapter imports are leaves: provenance `FromCall` / `FromOpenAPI` / …, Internal unless the importer says
 * otherwise, no composition authority, no env. Where they live (a peer's overlay in `PeerCompositeEnv`, bound to a
 * connection's scope) is up to the caller.
 */
import type { Effect } from "effect"
import type { AdapterError } from "../errors/AdapterError.js"
import type { HandlerRegistration } from "./Operation.js"

export interface OperationAdapter {
  /** What the adapter imports from, for messages (`from_call quic://…`). */
  readonly description: string
  /** Discover the remote's operations and build a forwarding registration for each. */
  readonly import: () => Effect.Effect<ReadonlyArray<HandlerRegistration>, AdapterError>
}
