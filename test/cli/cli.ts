/**
 * Running the real `alknet` program (bin/alknet.js) in child processes, on loopback, in temp dirs.
 */
import { Duration, Effect } from "effect"
import type { Scope } from "effect"
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { PassThrough } from "node:stream"
import { fileURLToPath } from "node:url"
import type * as Io from "../../src/cli/io.js"
import * as Program from "../../src/cli/program.js"

export const BIN = fileURLToPath(new URL("../../bin/alknet.js", import.meta.url))

export interface Result {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

export interface RunOptions {
  /** Written to stdin, which is then closed (default: closed at once). */
  readonly stdin?: string
  readonly env?: Record<string, string>
}

/** The environment of a child: without the user's ALKNET_* and OTEL_* settings. */
const childEnv = (extra: Record<string, string> = {}) => {
  const env: Record<string, string | undefined> = { ...process.env, ...extra }
  for (const key of ["ALKNET_HOME", "ALKNET_TOKEN"]) if (!(key in extra)) delete env[key]
  // nor the machine's OpenTelemetry settings (a node would export to them)
  for (const key of Object.keys(env)) if (key.startsWith("OTEL_") && !(key in extra)) delete env[key]
  return env
}

const start = (args: ReadonlyArray<string>, options: RunOptions, keepStdinOpen = false): ChildProcess => {
  const child = spawn(process.execPath, [BIN, ...args], { env: childEnv(options.env), stdio: ["pipe", "pipe", "pipe"] })
  child.stdout!.setEncoding("utf8")
  child.stderr!.setEncoding("utf8")
  if (options.stdin !== undefined) child.stdin!.write(options.stdin)
  if (!keepStdinOpen) child.stdin!.end()
  return child
}

const finished = (child: ChildProcess) =>
  Effect.async<number | null>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.succeed(child.exitCode))
    child.once("exit", (code) => resume(Effect.succeed(code)))
  })

/** Run `alknet ARGS` to completion. */
export const run = (args: ReadonlyArray<string>, options: RunOptions = {}): Effect.Effect<Result> =>
  Effect.suspend(() => {
    const child = start(args, options)
    let stdout = ""
    let stderr = ""
    child.stdout!.on("data", (chunk: string) => (stdout += chunk))
    child.stderr!.on("data", (chunk: string) => (stderr += chunk))
    // "close" waits for the pipes to drain as well as for the exit.
    return Effect.async<Result>((resume) => {
      child.once("close", (code) => resume(Effect.succeed({ code, stdout, stderr })))
    })
  })

/** A process still running, whose output the test watches. */
export interface Running {
  readonly child: ChildProcess
  readonly stdout: () => string
  readonly stderr: () => string
  /** Wait until stdout or stderr (all of it so far) matches. */
  readonly waitFor: (stream: "stdout" | "stderr", pattern: RegExp, timeout?: Duration.DurationInput) => Effect.Effect<RegExpMatchArray>
  /** How many times `pattern` occurs in stdout or stderr so far. */
  readonly count: (stream: "stdout" | "stderr", pattern: RegExp) => number
  /** Wait until `pattern` occurs more than `after` times; the latest occurrence. */
  readonly waitForNew: (stream: "stdout" | "stderr", pattern: RegExp, after: number) => Effect.Effect<RegExpMatchArray>
  readonly signal: (signal: NodeJS.Signals) => Effect.Effect<void>
  /** The exit code, once it exits. */
  readonly exited: Effect.Effect<number | null>
}

/** Start `alknet ARGS` for the scope's life (killed at the end if still running). */
export const spawnRunning = (args: ReadonlyArray<string>, options: RunOptions & { readonly keepStdinOpen?: boolean } = {}) =>
  Effect.acquireRelease(
    Effect.sync((): Running => {
      const child = start(args, options, options.keepStdinOpen)
      const text = { stdout: "", stderr: "" }
      const listeners = new Set<() => void>()
      for (const stream of ["stdout", "stderr"] as const) {
        child[stream]!.on("data", (chunk: string) => {
          text[stream] += chunk
          for (const listener of listeners) listener()
        })
      }
      child.once("exit", () => {
        for (const listener of listeners) listener()
      })
      const all = (stream: "stdout" | "stderr", pattern: RegExp) =>
        [...text[stream].matchAll(new RegExp(pattern.source, pattern.flags.includes("g") ? pattern.flags : `${pattern.flags}g`))]
      const waitUntil = (
        stream: "stdout" | "stderr",
        pattern: RegExp,
        find: () => RegExpMatchArray | null,
        timeout: Duration.DurationInput = "40 seconds"
      ) =>
        Effect.async<RegExpMatchArray, string>((resume) => {
          const check = () => {
            const match = find()
            if (match !== null) {
              listeners.delete(check)
              resume(Effect.succeed(match))
            } else if (child.exitCode !== null || child.signalCode !== null) {
              listeners.delete(check)
              resume(Effect.fail(`exited (${child.exitCode ?? child.signalCode}) before ${stream} matched ${pattern}`))
            }
          }
          listeners.add(check)
          check()
          return Effect.sync(() => void listeners.delete(check))
        }).pipe(
          Effect.timeoutFail({ duration: timeout, onTimeout: () => `timed out waiting for ${stream} to match ${pattern}` }),
          Effect.mapError((why) => new Error(`${why}\nstdout:\n${text.stdout}\nstderr:\n${text.stderr}`)),
          Effect.orDie
        )
      return {
        child,
        stdout: () => text.stdout,
        stderr: () => text.stderr,
        waitFor: (stream, pattern, timeout) => waitUntil(stream, pattern, () => text[stream].match(pattern), timeout),
        count: (stream, pattern) => all(stream, pattern).length,
        waitForNew: (stream, pattern, after) =>
          waitUntil(stream, pattern, () => {
            const found = all(stream, pattern)
            return found.length > after ? found[found.length - 1]! : null
          }),
        signal: (signal) => Effect.sync(() => void child.kill(signal)),
        exited: finished(child)
      }
    }),
    (running) =>
      Effect.suspend(() => {
        if (running.child.exitCode !== null || running.child.signalCode !== null) return Effect.void
        running.child.kill("SIGKILL")
        return Effect.asVoid(running.exited)
      })
  )

/** A temp dir for the scope's life. */
export const tempDir: Effect.Effect<string, never, Scope.Scope> = Effect.acquireRelease(
  Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "alknet-cli-"))),
  (dir) => Effect.promise(() => fs.rm(dir, { recursive: true, force: true }))
)

/** `alknet init --json` in a new home under `dir`: its path and fingerprint. */
export const initHome = (dir: string, name: string, ...flags: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const home = path.join(dir, name)
    const result = yield* run(["init", "--home", home, "--json", ...flags])
    if (result.code !== 0) return yield* Effect.dieMessage(`init failed (${result.code}): ${result.stderr}`)
    const created = JSON.parse(result.stdout) as { fingerprint: string; mnemonic?: string }
    return { home, ...created }
  })

/** A node started from a home, with what its first lines said. */
export interface CliNode extends Running {
  readonly home: string
  readonly fingerprint: string
  readonly quic: string
  /** The WebSocket address, when started with `--ws-listen`. */
  readonly ws: string | undefined
  /** The HTTP gateway's own address, when started with `--http-listen`. */
  readonly http: string | undefined
}

/** Start `alknet node --home HOME --listen 127.0.0.1:0 ...flags` and read its listening lines. */
export const startNode = (home: string, flags: ReadonlyArray<string> = [], options: RunOptions = {}) =>
  Effect.gen(function*() {
    const running = yield* spawnRunning(["node", "--home", home, "--listen", "127.0.0.1:0", ...flags], options)
    // The serving line on stderr comes after every listening line on stdout.
    yield* running.waitFor("stderr", /alknet node: serving/)
    const lines = running.stdout().trim().split("\n")
    const first = /^alknet node (\S+) listening (quic:\/\/\S+)$/.exec(lines[0] ?? "")
    if (first === null) return yield* Effect.dieMessage(`unexpected first line: ${lines[0]}`)
    const ws = lines.slice(1).map((l) => /^alknet node \S+ listening (wss?:\/\/\S+)$/.exec(l)?.[1]).find((a) => a !== undefined)
    const http = lines.slice(1).map((l) => /^alknet node \S+ listening (https?:\/\/\S+)$/.exec(l)?.[1]).find((a) => a !== undefined)
    return { ...running, home, fingerprint: first[1]!, quic: first[2]!, ws, http } satisfies CliNode
  })

/** Write a home's config file (e.g. a longer drain timeout) before its node starts. */
export const writeConfig = (home: string, config: Record<string, unknown>) =>
  Effect.promise(() => fs.writeFile(path.join(home, "config.json"), JSON.stringify(config)))

/** Run several commands at once (each is a process: this is where the time goes). */
export const runAll = <const Args extends ReadonlyArray<ReadonlyArray<string>>>(
  ...commands: Args
): Effect.Effect<{ -readonly [K in keyof Args]: Result }> =>
  Effect.all(commands.map((args) => run(args)), { concurrency: "unbounded" }) as any

/** The last line of an output. */
export const lastLine = (text: string): string => text.trimEnd().split("\n").at(-1) ?? ""

/** The lines of stderr that are not progress ("connecting to …"): a failure must be exactly one. */
export const errorLines = (stderr: string): ReadonlyArray<string> =>
  stderr.trimEnd().split("\n").filter((line) => line !== "" && !line.startsWith("connecting to "))

/** Streams for an in-process run: captured stdout / stderr, `stdin` (then its end), no colours. */
export const captureStdio = (stdin = "") => {
  const text = { stdout: "", stderr: "" }
  const input = new PassThrough()
  input.end(stdin)
  const stdio: Io.Stdio = {
    out: (t) => void (text.stdout += t),
    err: (t) => void (text.stderr += t),
    stdin: input,
    colors: { out: false, err: false },
    closed: Effect.never
  }
  return { stdio, text }
}

/**
 * Run `alknet ARGS` in this process (no child process: for what is not about the process boundary), with its own
 * streams and an environment of `env` only (not this process's ALKNET_* settings).
 */
export const runInProcess = (args: ReadonlyArray<string>, options: RunOptions = {}): Effect.Effect<Result> =>
  Effect.gen(function*() {
    const { stdio, text } = captureStdio(options.stdin)
    const code = yield* Program.run(["node", "alknet", ...args], { stdio, env: options.env ?? {} })
    return { code, stdout: text.stdout, stderr: text.stderr }
  })

/** {@link runAll}, in-process. */
export const runAllInProcess = <const Args extends ReadonlyArray<ReadonlyArray<string>>>(
  ...commands: Args
): Effect.Effect<{ -readonly [K in keyof Args]: Result }> =>
  Effect.all(commands.map((args) => runInProcess(args)), { concurrency: "unbounded" }) as any

/** {@link initHome}, in-process. */
export const initHomeInProcess = (dir: string, name: string, ...flags: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const home = path.join(dir, name)
    const result = yield* runInProcess(["init", "--home", home, "--json", ...flags])
    if (result.code !== 0) return yield* Effect.dieMessage(`init failed (${result.code}): ${result.stderr}`)
    const created = JSON.parse(result.stdout) as { fingerprint: string; mnemonic?: string }
    return { home, ...created }
  })
