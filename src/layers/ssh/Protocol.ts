/**
 * The names SSH over alknet is known by: its ALPN and the scopes its policy reads. Shared by the server, the client
 * and `Lazy.ts` without loading `ssh2`.
 */

/** The ALPN SSH is served under, on the node's QUIC endpoint. */
export const ALPN = "alknet/ssh"
/** Lets an identity run commands. */
export const EXEC_SCOPE = "ssh:exec"
/** Lets an identity open local forwards (to allow-listed destinations). */
export const FORWARD_SCOPE = "ssh:forward"
