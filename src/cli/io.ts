/**
 * What the CLI prints and reads: results on stdout, progress and errors on stderr, secrets from stdin.
 *
 * All of it goes through the fiber's {@link Stdio} (the process's streams by default), so the program can run
 * in-process with its output captured (tests) and so a closed stdout (`alknet subscribe … | head -1`) is noticed
 * once, quietly: writes after it are dropped and {@link Stdio.closed} completes, which ends the command (see
 * `program.ts`).
 */
import { Effect, FiberRef, Redacted } from "effect"
import { CliError } from "./errors.js"
import type { ExitCodeName } from "./errors.js"

/** Where a run of the program writes and reads. */
export interface Stdio {
  /** Write to stdout (the text carries its own newlines). */
  readonly out: (text: string) => void
  /** Write to stderr. */
  readonly err: (text: string) => void
  readonly stdin: NodeJS.ReadableStream & { readonly isTTY?: boolean }
  /** Colours (ANSI) on stdout / stderr: only on a terminal, and never with NO_COLOR set. */
  readonly colors: { readonly out: boolean; readonly err: boolean }
  /** Completes when the reader of stdout went away (EPIPE): the command then ends quietly. */
  readonly closed: Effect.Effect<void>
}

/** Colours on a stream: only on a terminal, and never with NO_COLOR set (https://no-color.org). */
export const wantsColor = (isTTY: boolean | undefined, env: Readonly<Record<string, string | undefined>>) =>
  isTTY === true && (env.NO_COLOR === undefined || env.NO_COLOR === "")

let processStdio: Stdio | undefined

/** The process's own streams; a closed stdout or stderr never throws (EPIPE is the reader's choice, not a bug). */
export const processStreams = (): Stdio => {
  if (processStdio !== undefined) return processStdio
  let stdoutClosed = false
  const onClosed = new Set<() => void>()
  const isGone = (e: NodeJS.ErrnoException) => e.code === "EPIPE" || e.code === "ERR_STREAM_DESTROYED"
  process.stdout.on("error", (e: NodeJS.ErrnoException) => {
    if (!isGone(e)) throw e
    stdoutClosed = true
    for (const f of onClosed) f()
  })
  process.stderr.on("error", () => {
    // Nowhere left to report it.
  })
  processStdio = {
    out: (text) => {
      if (!stdoutClosed && !process.stdout.destroyed) process.stdout.write(text)
    },
    err: (text) => {
      if (!process.stderr.destroyed) process.stderr.write(text)
    },
    stdin: process.stdin,
    colors: {
      out: wantsColor(process.stdout.isTTY, process.env),
      err: wantsColor(process.stderr.isTTY, process.env)
    },
    closed: Effect.async<void>((resume) => {
      if (stdoutClosed) return resume(Effect.void)
      const f = () => resume(Effect.void)
      onClosed.add(f)
      return Effect.sync(() => void onClosed.delete(f))
    })
  }
  return processStdio
}

/** The current run's streams. */
export const stdio: FiberRef.FiberRef<Stdio | undefined> = FiberRef.unsafeMake<Stdio | undefined>(undefined)

/** The fiber's streams (the process's unless a run set others). */
export const current: Effect.Effect<Stdio> = FiberRef.getWith(stdio, (s) => Effect.sync(() => s ?? processStreams()))

/** A line of results on stdout. */
export const out = (text: string) => Effect.flatMap(current, (s) => Effect.sync(() => s.out(`${text}\n`)))

/** A line of progress or diagnostics on stderr. */
export const err = (text: string) => Effect.flatMap(current, (s) => Effect.sync(() => s.err(`${text}\n`)))

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

/** `1 item`, `3 items`. */
export const plural = (n: number, noun: string, nouns = `${noun}s`) => `${n} ${n === 1 ? noun : nouns}`

// ---------------------------------------------------------------------------------------------------------------
// stdin: read once, shared by whoever needs it (a mnemonic on the first line, a token or credential value after it)

interface Reader {
  buffered: string
  ended: boolean
  started: boolean
  consumed: number
  readonly waiters: Set<() => void>
}

const readers = new WeakMap<object, Reader>()

const readerOf = (stdin: Stdio["stdin"]): Reader => {
  let reader = readers.get(stdin)
  if (reader === undefined) {
    reader = { buffered: "", ended: false, started: false, consumed: 0, waiters: new Set() }
    readers.set(stdin, reader)
  }
  return reader
}

const start = (stdin: Stdio["stdin"], r: Reader) => {
  if (r.started) return
  r.started = true
  stdin.setEncoding("utf8")
  const wakeAll = () => {
    for (const wake of r.waiters) wake()
  }
  stdin.on("data", (chunk: string) => {
    r.buffered += chunk
    wakeAll()
  })
  stdin.on("end", () => {
    r.ended = true
    wakeAll()
  })
  stdin.on("error", () => {
    r.ended = true
    wakeAll()
  })
}

/** Wait until `ready()` holds or stdin ends. */
const until = (stdin: Stdio["stdin"], r: Reader, ready: () => boolean) =>
  Effect.async<void>((resume) => {
    start(stdin, r)
    if (ready() || r.ended) return resume(Effect.void)
    const wake = () => {
      if (ready() || r.ended) {
        r.waiters.delete(wake)
        // Paused, stdin no longer keeps the process alive; what arrives meanwhile stays buffered.
        stdin.pause()
        resume(Effect.void)
      }
    }
    r.waiters.add(wake)
    stdin.resume()
    return Effect.sync(() => {
      r.waiters.delete(wake)
      stdin.pause()
    })
  })

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
    const { stdin } = yield* current
    const r = readerOf(stdin)
    if (stdin.isTTY === true) yield* err(prompt)
    yield* until(stdin, r, () => r.buffered.indexOf("\n", r.consumed) !== -1)
    const newline = r.buffered.indexOf("\n", r.consumed)
    const end = newline === -1 ? r.buffered.length : newline
    const text = r.buffered.slice(r.consumed, end).replace(/\r$/, "")
    r.consumed = newline === -1 ? r.buffered.length : newline + 1
    if (text.trim() === "" && newline === -1) {
      return yield* new CliError({ code: missing, message: `expected ${what} on stdin, got nothing` })
    }
    return Redacted.make(text)
  })

/** The rest of stdin, up to its end, without one trailing newline. */
export const readRest = (what: string): Effect.Effect<Redacted.Redacted<string>, CliError> =>
  Effect.gen(function*() {
    const { stdin } = yield* current
    const r = readerOf(stdin)
    if (stdin.isTTY === true) yield* err(`reading ${what} from stdin (end with Ctrl-D)`)
    yield* until(stdin, r, () => false)
    const text = r.buffered.slice(r.consumed).replace(/\r?\n$/, "")
    r.consumed = r.buffered.length
    if (text.length === 0) return yield* new CliError({ code: "Usage", message: `expected ${what} on stdin, got nothing` })
    return Redacted.make(text)
  })
