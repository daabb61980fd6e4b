/**
 * What the CLI prints and reads: results on stdout, progress and errors on stderr, secrets from stdin.
 */
import { Effect, Redacted } from "effect"
import { CliError } from "./errors.js"
import type { ExitCodeName } from "./errors.js"

/** A line of results on stdout. */
export const out = (text: string) => Effect.sync(() => void process.stdout.write(`${text}\n`))

/** A line of progress or diagnostics on stderr. */
export const err = (text: string) => Effect.sync(() => void process.stderr.write(`${text}\n`))

/** A value as JSON: pretty (for people and `jq`) or, for line-oriented output, compact. */
export const json = (value: unknown, compact = false) =>
  out(compact ? JSON.stringify(value) : JSON.stringify(value, null, 2))

/** Rows as an aligned table with a header; `(none)` when empty. */
export const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>) =>
  Effect.suspend(() => {
    if (rows.length === 0) return out("(none)")
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)))
    const render = (cells: ReadonlyArray<string>) =>
      cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd()
    return out([render(header), ...rows.map(render)].join("\n"))
  })

// ---------------------------------------------------------------------------------------------------------------
// stdin: read once, shared by whoever needs it (a mnemonic on the first line, a credential value after it)

let buffered = ""
let ended = false
let started = false
const waiters = new Set<() => void>()

const start = () => {
  if (started) return
  started = true
  process.stdin.setEncoding("utf8")
  process.stdin.on("data", (chunk: string) => {
    buffered += chunk
    for (const wake of waiters) wake()
  })
  process.stdin.on("end", () => {
    ended = true
    for (const wake of waiters) wake()
  })
  process.stdin.on("error", () => {
    ended = true
    for (const wake of waiters) wake()
  })
}

/** Wait until `ready()` holds or stdin ends. */
const until = (ready: () => boolean) =>
  Effect.async<void>((resume) => {
    start()
    if (ready() || ended) return resume(Effect.void)
    const wake = () => {
      if (ready() || ended) {
        waiters.delete(wake)
        // Paused, stdin no longer keeps the process alive; what arrives meanwhile stays buffered.
        process.stdin.pause()
        resume(Effect.void)
      }
    }
    waiters.add(wake)
    process.stdin.resume()
    return Effect.sync(() => {
      waiters.delete(wake)
      process.stdin.pause()
    })
  })

let consumed = 0

/**
 * The next line of stdin (without its newline); fails with `what` named when stdin has no more lines. When stdin is
 * a terminal, `prompt` is shown on stderr first.
 */
export const readLine = (
  what: string,
  prompt: string,
  missing: ExitCodeName = "Usage"
): Effect.Effect<Redacted.Redacted<string>, CliError> =>
  Effect.gen(function*() {
    if (process.stdin.isTTY) yield* err(prompt)
    yield* until(() => buffered.indexOf("\n", consumed) !== -1)
    const newline = buffered.indexOf("\n", consumed)
    const end = newline === -1 ? buffered.length : newline
    const text = buffered.slice(consumed, end).replace(/\r$/, "")
    consumed = newline === -1 ? buffered.length : newline + 1
    if (text.trim() === "" && newline === -1) {
      return yield* new CliError({ code: missing, message: `expected ${what} on stdin, got nothing` })
    }
    return Redacted.make(text)
  })

/** The rest of stdin, up to its end, without one trailing newline. */
export const readRest = (what: string): Effect.Effect<Redacted.Redacted<string>, CliError> =>
  Effect.gen(function*() {
    if (process.stdin.isTTY) yield* err(`reading ${what} from stdin (end with Ctrl-D)`)
    yield* until(() => false)
    const text = buffered.slice(consumed).replace(/\r?\n$/, "")
    consumed = buffered.length
    if (text.length === 0) return yield* new CliError({ code: "Usage", message: `expected ${what} on stdin, got nothing` })
    return Redacted.make(text)
  })
