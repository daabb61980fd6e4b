/**
 * The one place where the CLI turns a failure into what the user sees: one line on stderr and an exit code.
 *
 * Every error a command can fail with (the CLI's own `CliError`, and the library's `CallError`, `EndpointError`,
 * `NodeError`, `HomeError`, `ConfigError`, `VaultError`, `StoreError`, @effect/cli's `ValidationError`) is classified
 * here into an {@link ExitCode}. Messages are the errors' own: they never carry secrets (tokens, mnemonics and
 * credential values are `Redacted` everywhere). A defect is `internal error`, with the cause only under `--verbose`.
 */
import * as ValidationError from "@effect/cli/ValidationError"
import { Cause, Data, Exit, Option } from "effect"
import { echo, MESSAGE_LIMIT } from "../errors/CallError.js"
import * as Json from "../schema/Json.js"

/** Exit codes, documented in the README (`alknet` → exit codes). Append only: scripts depend on them. */
export const ExitCode = {
  Ok: 0,
  /** A bug: the message says what, `--verbose` shows the cause. */
  Internal: 1,
  /** Unknown command or option, a missing or malformed argument. */
  Usage: 2,
  /** JSON input that does not parse. */
  BadJson: 3,
  /** No alknet home at `--home` (missing, or no config file). */
  NoHome: 4,
  /** `init` on an existing home. */
  HomeExists: 5,
  /** The home's config file does not parse or has a bad field. */
  BadConfig: 6,
  /** The mnemonic is invalid, unreadable, or was not given. */
  BadMnemonic: 7,
  /** The vault cannot decrypt: another mnemonic, altered data, or a key version it does not have. */
  Vault: 8,
  /** The store or the file system failed. */
  Store: 9,
  /** No such peer, API key or credential. */
  NotFound: 10,
  /** `peer add` of a peer that exists. */
  Exists: 11,
  /** The node cannot listen (address in use, bad listen address). */
  Listen: 12,
  /** The TLS identity cannot be used (key or certificate file). */
  Identity: 13,
  /** An address that is not `quic://HOST:PORT`, `ws://HOST:PORT` or `wss://HOST:PORT`. */
  BadAddress: 14,
  /** Cannot connect: nothing answers, the connection was refused, or the handshake failed. */
  Unreachable: 15,
  /** The remote's key is not the pinned `--fingerprint`. */
  FingerprintMismatch: 16,
  /** No `--fingerprint` and the remote is not CA-verified (a raw-key node): refused, fail closed. */
  Untrusted: 17,
  /** The remote refused our identity or does not speak `alknet/call`. */
  Rejected: 18,
  /** `status`: no node runs from the home (none was started, or it died and left its run file). */
  NotRunning: 19,
  /** Call error `NOT_FOUND` (unknown operation). */
  CallNotFound: 20,
  /** Call error `FORBIDDEN`. */
  CallForbidden: 21,
  /** Call error `INVALID_INPUT`. */
  CallInvalidInput: 22,
  /** Call error `INVALID_OPERATION_TYPE` (e.g. `call` on a subscription). */
  CallInvalidOperationType: 23,
  /** Call error `INTERNAL` (also: the connection closed before the answer). */
  CallInternal: 24,
  /** Call error `TIMEOUT`. */
  CallTimeout: 25,
  /** A domain error code declared by the operation. */
  CallDomain: 26,
  /** `node`: a node already runs from the home (it holds `HOME/node.lock`). */
  AlreadyRunning: 27,
  /** Stopped by Ctrl-C / SIGTERM (except `alknet node`, for which that is the normal end: 0). */
  Interrupted: 130
} as const
export type ExitCodeName = keyof typeof ExitCode

/** A failure of the CLI itself (bad input, a refused action), with the exit code it ends with. */
export class CliError extends Data.TaggedError("CliError")<{
  readonly code: ExitCodeName
  readonly message: string
}> {}

export const usage = (message: string) => new CliError({ code: "Usage", message })

/** What to print and how to exit. */
export interface Failure {
  readonly exitCode: number
  /** One line, for stderr. */
  readonly line: string
}

const callCodes: Record<string, ExitCodeName> = {
  NOT_FOUND: "CallNotFound",
  FORBIDDEN: "CallForbidden",
  INVALID_INPUT: "CallInvalidInput",
  INVALID_OPERATION_TYPE: "CallInvalidOperationType",
  INTERNAL: "CallInternal",
  TIMEOUT: "CallTimeout"
}

const endpointCodes: Record<string, ExitCodeName> = {
  Identity: "Identity",
  Config: "BadAddress",
  Bind: "Listen",
  Connect: "Unreachable",
  AlpnRefused: "Rejected",
  FingerprintMismatch: "FingerprintMismatch",
  Untrusted: "Untrusted",
  Rejected: "Rejected"
}

const nodeCodes: Record<string, ExitCodeName> = {
  Config: "BadConfig",
  Home: "NoHome",
  Vault: "BadMnemonic",
  Store: "Store",
  Identity: "Identity",
  Listen: "Listen",
  Registry: "Internal"
}

const vaultCodes: Record<string, ExitCodeName> = {
  InvalidMnemonic: "BadMnemonic",
  MnemonicFile: "BadMnemonic",
  Locked: "Internal",
  AlreadyUnlocked: "Internal",
  InvalidPath: "Internal"
}

const sshCodes: Record<string, ExitCodeName> = {
  Connect: "Unreachable",
  HostKeyMismatch: "FingerprintMismatch",
  Auth: "Rejected",
  Refused: "CallForbidden"
}

/** A call error's `details` (sent by the remote) as bounded JSON; one nested too deep to print says so. */
const printDetails = (details: unknown): string => {
  if (Json.exceedsDepth(details)) return `(${Json.tooDeep("details")})`
  try {
    return echo(JSON.stringify(details) ?? String(details), MESSAGE_LIMIT)
  } catch {
    return "(details not printable as JSON)"
  }
}

const oneLine = (text: string) => text.replace(/\s*\n\s*/g, " ").trim()

const line = (message: string) => `alknet: ${oneLine(message)}`

const tagged = (error: unknown): { readonly _tag: string; readonly reason?: string; readonly message?: string } | undefined =>
  typeof error === "object" && error !== null && typeof (error as { _tag?: unknown })._tag === "string"
    ? error as { _tag: string }
    : undefined

/** Classify an expected error (the `E` of a command's Effect). */
export const classify = (error: unknown): Failure => {
  const of = (name: ExitCodeName, text: string): Failure => ({ exitCode: ExitCode[name], line: text })
  if (ValidationError.isValidationError(error)) {
    // @effect/cli has already printed what was wrong with the command line.
    return of("Usage", "")
  }
  const e = tagged(error)
  const message = e?.message ?? String(error)
  switch (e?._tag) {
    case "CliError":
      return of((error as CliError).code, line(message))
    case "CallError": {
      const { code, details } = error as { code: string; details?: unknown }
      const suffix = details === undefined ? "" : ` details: ${printDetails(details)}`
      // code and message are bounded where a CallError is made (also off the wire); details are bounded here
      return of(callCodes[code] ?? "CallDomain", `${code}: ${oneLine(message)}${suffix}`)
    }
    case "EndpointError":
      return of(endpointCodes[e.reason ?? ""] ?? "Internal", line(message))
    case "NodeError":
      return of(nodeCodes[e.reason ?? ""] ?? "Internal", line(message))
    case "HomeError":
      return of(e.reason === "Exists" ? "HomeExists" : e.reason === "Missing" ? "NoHome" : "Store", line(message))
    case "ConfigError":
      return of("BadConfig", line(message))
    case "VaultError":
      return of(vaultCodes[e.reason ?? ""] ?? "Vault", line(message))
    case "StoreError":
      return of(e.reason === "NotFound" ? "NotFound" : "Store", line(message))
    case "SshError":
      return of(sshCodes[e.reason ?? ""] ?? "Internal", line(message))
    case "RemoteExit":
      // `alknet ssh`: the remote command's own status, as ssh does; nothing to add to what it printed.
      return { exitCode: (error as { status: number }).status, line: "" }
    default:
      return of("Internal", line(`internal error: ${message}`))
  }
}

/** Classify how a command ended: its failure, a defect, or success. Interruption is handled by the caller. */
export const fromExit = <E>(exit: Exit.Exit<unknown, E>, verbose: boolean): Failure & { readonly cause?: string } => {
  if (Exit.isSuccess(exit)) return { exitCode: ExitCode.Ok, line: "" }
  const failure = Cause.failureOption(exit.cause)
  const classified = Option.isSome(failure)
    ? classify(failure.value)
    : classify(Cause.squash(exit.cause))
  // A command-line error has been said in full already: there is no cause worth showing.
  const parseError = Option.isSome(failure) &&
    (ValidationError.isValidationError(failure.value) ||
      (failure.value instanceof CliError && failure.value.code === "Usage"))
  return verbose && !parseError ? { ...classified, cause: Cause.pretty(exit.cause) } : classified
}

let onSignal: number = ExitCode.Interrupted

/** From now on a SIGINT / SIGTERM is the normal end of this program (a running node): exit 0 after it. */
export const signalEndsNormally = () => {
  onSignal = ExitCode.Ok
}

/** The exit code after a SIGINT / SIGTERM stopped the program. */
export const signalExitCode = (): number => onSignal
