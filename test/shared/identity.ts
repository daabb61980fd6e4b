/**
 * Helpers shared by the identity suites: entries, fingerprints, temp directories, waiting for a condition.
 */
import { Effect, Option, Schedule } from "effect"
import type { Duration, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as ApiKeyEntry from "../../src/schema/ApiKeyEntry.js"
import * as PeerEntry from "../../src/schema/PeerEntry.js"
import type { Identity } from "../../src/schema/Identity.js"

/** A distinct, well-formed Ed25519 fingerprint per `n`. */
export const ed25519 = (n: number): string => `ed25519:${n.toString(16).padStart(64, "0")}`
/** A distinct, well-formed X.509 fingerprint per `n`. */
export const sha256 = (n: number): string => `SHA256:${n.toString(16).padStart(64, "f")}`

export const peer = PeerEntry.make
export const apiKey = ApiKeyEntry.make

/** A temporary directory, removed with the scope. */
export const tempDir: Effect.Effect<string, never, Scope.Scope> = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "alknet-identity-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

/** The id of a resolved identity, or `undefined` — compact to assert on. */
export const idOf = (identity: Option.Option<Identity>): string | undefined =>
  Option.getOrUndefined(Option.map(identity, (i) => i.id))

/**
 * Re-run `check` every few milliseconds until it returns true; fail after `within` (a bound for a broken watcher,
 * not a speed assertion). Needs the live clock (`it.live` / `it.scopedLive`).
 */
export const eventually = <E, R>(
  check: Effect.Effect<boolean, E, R>,
  within: Duration.DurationInput = "10 seconds"
): Effect.Effect<void, E | string, R> =>
  check.pipe(
    Effect.repeat({ schedule: Schedule.spaced("5 millis"), until: (ok) => ok }),
    Effect.timeoutFail({ duration: within, onTimeout: () => "condition not reached in time" }),
    Effect.asVoid
  )
