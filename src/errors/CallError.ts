/**
 * The error a call fails with, on both sides of the wire (SPEC §4): `code`, `message`, `retryable`, `details`.
 *
 * - Protocol codes: `NOT_FOUND`, `FORBIDDEN`, `INVALID_INPUT`, `INVALID_OPERATION_TYPE`, `INTERNAL`, `TIMEOUT` (the
 *   only retryable one), with the reference's exact messages (constructors below).
 * - Domain codes: a handler fails with `CallError.domain("NOT_READY", "…", details)`; the dispatcher lets a code the
 *   operation declared in its `errors` pass through with its details, turns an undeclared one into `INTERNAL` (the
 *   original code in `details.code`), and a defect into `INTERNAL` "internal error" (nothing leaked).
 *
 * An error received off the wire keeps the code it was sent with (so forwarded domain errors survive intact);
 * `protocolCode` is how a client classifies it: any code that is not a protocol code counts as `INTERNAL`.
 *
 * Bounded echo: a message never repeats a caller's value in full. Every piece of caller input put into a message
 * (an operation name, an input path, a schema's "actual" value) goes through {@link echo}, which keeps the first
 * {@link ECHO_LIMIT} characters and says how long the rest was; every message as a whole (including one received
 * off the wire, or a handler's own) is bounded the same way at {@link MESSAGE_LIMIT}. What the wire, the logs and the
 * CLI show of an error is therefore bounded whatever the caller sent.
 */
import { Schema } from "effect"

export const PROTOCOL_CODES = [
  "NOT_FOUND",
  "FORBIDDEN",
  "INVALID_INPUT",
  "INVALID_OPERATION_TYPE",
  "INTERNAL",
  "TIMEOUT"
] as const
export type ProtocolCode = typeof PROTOCOL_CODES[number]

const protocolCodes: ReadonlySet<string> = new Set(PROTOCOL_CODES)

/** How much of a caller's value a message repeats: 200 characters. */
export const ECHO_LIMIT = 200

/** How long an error message (code, message) can be as a whole: 1,000 characters. */
export const MESSAGE_LIMIT = 1000

/**
 * `text` if it has at most `limit` characters; else its first `limit` characters (never half a surrogate pair) and
 * `…(truncated, N characters)`, N being the full length. The one helper for any text built from caller input.
 */
export const echo = (text: string, limit: number = ECHO_LIMIT): string => {
  if (text.length <= limit) return text
  const code = text.charCodeAt(limit - 1)
  const cut = code >= 0xd800 && code <= 0xdbff ? limit - 1 : limit
  return `${text.slice(0, cut)}…(truncated, ${text.length} characters)`
}

/** Whether `code` is one of the six protocol codes. */
export const isProtocolCode = (code: string): code is ProtocolCode => protocolCodes.has(code)

export class CallError extends Schema.TaggedError<CallError>("alknet/CallError")("CallError", {
  code: Schema.String,
  message: Schema.String,
  retryable: Schema.Boolean,
  details: Schema.optional(Schema.Unknown)
}) {
  /** The protocol code a client acts on: unknown (domain) codes count as `INTERNAL`. */
  get protocolCode(): ProtocolCode {
    return isProtocolCode(this.code) ? this.code : "INTERNAL"
  }

  /** The `call.error` payload: `details` omitted when absent. */
  toPayload(): { code: string; message: string; retryable: boolean; details?: unknown } {
    return this.details === undefined
      ? { code: this.code, message: this.message, retryable: this.retryable }
      : { code: this.code, message: this.message, retryable: this.retryable, details: this.details }
  }
}

const make = (code: string, message: string, details?: unknown): CallError => {
  const fields = { code: echo(code, MESSAGE_LIMIT), message: echo(message, MESSAGE_LIMIT), retryable: code === "TIMEOUT" }
  return new CallError(details === undefined ? fields : { ...fields, details })
}

/**
 * `f()` with no stack trace captured by the errors it builds. For the errors the engine makes in bulk and whose stack
 * says nothing (one per pending call when a connection closes, one per error received off the wire): capturing a
 * stack costs tens of microseconds each.
 */
const withoutStack = <A>(f: () => A): A => {
  const limit = Error.stackTraceLimit
  Error.stackTraceLimit = 0
  try {
    return f()
  } finally {
    Error.stackTraceLimit = limit
  }
}

/**
 * `NOT_FOUND "operation not found: {name}"` (also for Internal operations and, in discovery, forbidden ones). The
 * name is the caller's: it is echoed bounded.
 */
export const notFound = (name: string): CallError => make("NOT_FOUND", `operation not found: ${echo(name)}`)
/** `FORBIDDEN` with one of the access-control messages of SPEC §4. */
export const forbidden = (message: string): CallError => make("FORBIDDEN", message)
/** `INVALID_INPUT` with a message naming the failing path (build the parts that come from the input with `echo`). */
export const invalidInput = (message: string): CallError => make("INVALID_INPUT", message)
/** `INVALID_OPERATION_TYPE`: a subscription called as a call, or the reverse. */
export const invalidOperationType = (message: string): CallError => make("INVALID_OPERATION_TYPE", message)
/** `INTERNAL`, optionally with details. */
export const internal = (message: string, details?: unknown): CallError => make("INTERNAL", message, details)
/** `INTERNAL "connection closed"`: the connection ended before the call did. */
export const connectionClosed = (): CallError => withoutStack(() => make("INTERNAL", "connection closed"))
/** `TIMEOUT "request timed out"` (retryable). */
export const timeout = (): CallError => withoutStack(() => make("TIMEOUT", "request timed out"))
/**
 * `OVERLOADED` (retryable): the callee refused the request because a limit its operator set was reached (calls in
 * flight on the connection or for the caller). An alknet extension: a reference client reads it as `INTERNAL`, and
 * it carries `retryable: true` so a client may try again later.
 */
export const overloaded = (message: string): CallError => withoutStack(() => new CallError(overloadedPayload(message)))
/** The `call.error` payload of {@link overloaded}, without building the error (a connection keeps one for refusals). */
export const overloadedPayload = (message: string): { code: string; message: string; retryable: boolean } => ({
  code: "OVERLOADED",
  message,
  retryable: true
})
/** A domain error of an operation; its `code` should be one the operation declares. */
export const domain = (code: string, message: string, details?: unknown): CallError => make(code, message, details)

/** Read a `call.error` payload off the wire; a malformed one becomes `INTERNAL`. Code and message are bounded. */
export const fromPayload = (payload: { readonly [key: string]: unknown }): CallError => {
  const { code, details, message, retryable } = payload
  if (typeof code !== "string" || typeof message !== "string") {
    return internal("malformed call.error payload")
  }
  const fields = {
    code: echo(code, MESSAGE_LIMIT),
    message: echo(message, MESSAGE_LIMIT),
    retryable: typeof retryable === "boolean" ? retryable : code === "TIMEOUT"
  }
  return withoutStack(() => new CallError(details === undefined ? fields : { ...fields, details }))
}
