/**
 * Scoped file-change signals for live reload (config file, SQLite database).
 *
 * The *directory* is watched, not the file: editors and deploy tools replace a file by writing a temporary one and
 * renaming it over the original, which silently ends a watch on the old inode; SQLite creates and deletes its
 * `-wal` file as it goes. Events for the named files (and events without a name, which some platforms send) become
 * one coalesced signal: a sliding queue of capacity 1, so a burst of writes costs one wake-up and none is lost.
 */
import { Clock, Data, Duration, Effect, Queue } from "effect"
import type { Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"

export class WatchError extends Data.TaggedError("WatchError")<{ readonly message: string }> {}

/**
 * Watch `directory` for changes to any of `names`; the returned queue receives a signal after each. Closing the
 * scope closes the watcher.
 */
export const watchFiles = (
  directory: string,
  names: ReadonlyArray<string>
): Effect.Effect<Queue.Dequeue<void>, WatchError, Scope.Scope> =>
  Effect.gen(function*() {
    const signal = yield* Effect.acquireRelease(Queue.sliding<void>(1), Queue.shutdown)
    const wanted = new Set(names.map((name) => path.basename(name)))
    yield* Effect.acquireRelease(
      Effect.try({
        try: () => {
          const watcher = fs.watch(directory, { persistent: false }, (_event, name) => {
            if (name === null || wanted.has(name)) signal.unsafeOffer(undefined)
          })
          // A watcher error (directory removed, inotify limit) must not crash the node: keep serving what we have.
          watcher.on("error", (error) => {
            Effect.runFork(Effect.logWarning(`file watch on ${directory} stopped: ${error.message}`))
          })
          return watcher
        },
        catch: (cause) =>
          new WatchError({ message: `cannot watch ${directory}: ${cause instanceof Error ? cause.message : cause}` })
      }),
      (watcher) => Effect.sync(() => watcher.close())
    )
    return signal
  })

/** Wait up to `timeout` for the next signal: `true` if one came (and was taken), `false` if the time ran out. */
export const signalWithin = (signal: Queue.Dequeue<void>, timeout: Duration.DurationInput): Effect.Effect<boolean> =>
  Effect.raceFirst(Effect.as(Queue.take(signal), true), Effect.as(Effect.sleep(timeout), false))

/**
 * Background loops that react to file changes must run on wall-clock time even inside a test that installed a
 * `TestClock`: debounce and re-check delays are about real disks, not simulated time.
 */
export const withWallClock = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.withClock(effect, wallClock)

const wallClock = Clock.make()
