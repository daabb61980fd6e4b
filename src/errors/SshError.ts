/**
 * What SSH over alknet reports to a client (`alknet ssh`, `SshClient`).
 *
 * - `Connect`: the SSH session could not be set up over the connection (the stream failed, the node closed it, the
 *   protocol broke down).
 * - `HostKeyMismatch`: the node's SSH host key is not the pinned one.
 * - `Auth`: the node refused our key (it resolves to no peer).
 * - `Refused`: the node refused the request (exec without `ssh:exec`, a forward outside the allow-list, …).
 */
import { Data } from "effect"

export type SshErrorReason = "Connect" | "HostKeyMismatch" | "Auth" | "Refused"

export class SshError extends Data.TaggedError("SshError")<{
  readonly reason: SshErrorReason
  readonly message: string
}> {}
