/**
 * One node per home: `alknet node` holds `HOME/node.lock` (created exclusively, holding its pid) while it runs. A
 * second node on the same home is refused; a lock left by a node that died without cleaning up (kill -9, a crash) is
 * taken over, with a note on stderr. `alknet status` uses the same pid check on the run file.
 */
import { Effect } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { CliError } from "./errors.js"
import * as Io from "./io.js"

/** The lock a running node holds. */
export const lockFile = (home: string) => path.join(home, "node.lock")

/** Whether a process with this pid exists (signal 0 checks without sending anything; EPERM: it exists, not ours). */
export const isAlive = (pid: number): boolean => {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"
  }
}

const readPid = (file: string) =>
  Effect.promise(() =>
    fs.readFile(file, "utf8").then((text) => Number.parseInt(text.trim(), 10), () => undefined)
  )

const create = (file: string) =>
  Effect.tryPromise({
    try: () => fs.writeFile(file, `${process.pid}\n`, { flag: "wx", mode: 0o644 }).then(() => true),
    catch: (e) => e as NodeJS.ErrnoException
  }).pipe(
    Effect.catchIf((e) => e.code === "EEXIST", () => Effect.succeed(false)),
    Effect.mapError((e) => new CliError({ code: "Store", message: `cannot create ${file}: ${e.code ?? e.message}` }))
  )

/** Take the home's lock for the scope's life (removed at the end if it is still ours). */
export const acquire = (home: string) =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const file = lockFile(home)
      for (let attempt = 0; attempt < 2; attempt++) {
        if (yield* create(file)) return file
        const pid = yield* readPid(file)
        if (pid !== undefined && isAlive(pid)) {
          return yield* new CliError({
            code: "AlreadyRunning",
            message: `a node is already running from ${home} (pid ${pid}); stop it first, or use another --home`
          })
        }
        // Left by a node that did not stop cleanly: take it over (one retry: another node may do the same).
        yield* Io.err(
          `alknet node: ${file} was left by ${pid === undefined ? "a node" : `pid ${pid}`}, which is no longer running; taking it over`
        )
        yield* Effect.promise(() => fs.rm(file, { force: true }))
      }
      return yield* new CliError({ code: "AlreadyRunning", message: `another node took ${file} first` })
    }),
    (file) =>
      Effect.flatMap(readPid(file), (pid) =>
        pid === process.pid ? Effect.promise(() => fs.rm(file, { force: true })) : Effect.void)
  )
