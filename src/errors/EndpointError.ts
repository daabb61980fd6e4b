/**
 * What setting up a transport endpoint or an outbound connection reports (SPEC §3). Failures of streams on a
 * connection that is up are `TransportError`s instead.
 *
 * - `Identity`: the TLS identity cannot be used (a missing or unreadable file, a certificate and key that do not
 *   match, a key that is not Ed25519 where one is required). Raised at startup, before anything listens.
 * - `Config`: invalid endpoint options (no protocol handlers, an ALPN that is empty or over 255 bytes).
 * - `Bind`: the listener could not bind its address.
 * - `Connect`: the remote could not be reached or the handshake failed for a transport reason.
 * - `AlpnRefused`: the remote does not serve the protocol (ALPN) we asked for.
 * - `FingerprintMismatch`: the remote's certificate key is not the one we pinned.
 * - `Untrusted`: no fingerprint was pinned and the remote's certificate did not pass CA verification. An unknown
 *   Ed25519 self-signed identity always ends here (fail closed).
 * - `Rejected`: the remote refused our TLS identity.
 */
import { Data } from "effect"

export type EndpointErrorReason =
  | "Identity"
  | "Config"
  | "Bind"
  | "Connect"
  | "AlpnRefused"
  | "FingerprintMismatch"
  | "Untrusted"
  | "Rejected"

export class EndpointError extends Data.TaggedError("EndpointError")<{
  readonly reason: EndpointErrorReason
  readonly message: string
}> {}

export const make = (reason: EndpointErrorReason, message: string): EndpointError =>
  new EndpointError({ reason, message })
