/**
 * Why importing another system's operations failed (SPEC §9, §14). One class, a `reason`, a readable `message`:
 *
 * - `DiscoveryFailed`: the remote answered discovery with an error (or not at all);
 * - `SchemaParse`: what it answered is not a spec we can read;
 * - `Transport`: the connection closed or could not be used;
 * - `Unauthorized`: the remote refused us (FORBIDDEN, authentication required);
 * - `SamePeerCollision`: two operations of one peer would have the same name;
 * - `Credential`: the credential an import names is not in the store, or does not decrypt.
 */
import { Data } from "effect"

export type Reason =
  | "DiscoveryFailed"
  | "SchemaParse"
  | "Transport"
  | "Unauthorized"
  | "SamePeerCollision"
  | "Credential"

export class AdapterError extends Data.TaggedError("AdapterError")<{
  readonly reason: Reason
  readonly message: string
}> {}

export const make = (reason: Reason, message: string): AdapterError => new AdapterError({ reason, message })
