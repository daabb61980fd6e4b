/**
 * The last resort of a shutdown. A signal interrupts the running command, whose finalizers drain and close what it
 * holds; if something still holds the process after the drain timeout plus a grace period (a peer that vanished in
 * the middle of a frame, a close handshake nobody answers), the process exits anyway. Armed by the process entry
 * (`main.ts`) only, never by an in-process run.
 */

/** Grace after the drain timeout before the exit is forced. */
export const GRACE_MS = 3000

let drainMs = 2000

/** The running command's drain timeout (`alknet node` sets its config's `drain_timeout_ms`). */
export const setDrainTimeout = (ms: number): void => {
  drainMs = ms
}

/** On the first SIGINT / SIGTERM, exit with `code` if the process is still alive after drain + grace. */
export const armOnSignal = (code: () => number): void => {
  const arm = () => {
    const limit = drainMs + GRACE_MS
    const timer = setTimeout(() => {
      process.stderr.write(`alknet: still shutting down ${limit} ms after the signal: exiting now\n`)
      process.exit(code())
    }, limit)
    timer.unref()
  }
  process.once("SIGINT", arm)
  process.once("SIGTERM", arm)
}
