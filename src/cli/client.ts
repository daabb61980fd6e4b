/**
 * Connecting to a node for `call`, `subscribe`, `ls` and `schema`: the credentials from the command line, retries
 * while nothing answers, progress on stderr. Loaded only by the commands that connect (it brings in QUIC).
 */
import { Duration, Effect, Fiber, Option, Schema } from "effect"
import type { Redacted } from "effect"
import { compact } from "../internal/compact.js"
import { Fingerprint } from "../schema/PeerEntry.js"
import * as CallClient from "../layers/Client.js"
import { CliError, usage } from "./errors.js"
import * as Home from "./home.js"
import * as Io from "./io.js"
import * as Shared from "./options.js"

export interface ConnectionOptions {
  readonly home: Option.Option<string>
  readonly fingerprint: Option.Option<string>
  readonly token: Option.Option<Redacted.Redacted<string>>
  readonly connectTimeout: string
  readonly retries: number
}

const isFingerprint = Schema.is(Fingerprint)

/** The TLS identity the home's node presents (its config's `tls`: by default the vault's node key). */
const homeIdentity = (home: string) =>
  Effect.zip(Home.config(home), Effect.promise(() => import("../layers/Node.js"))).pipe(
    // The node's layers (its stores, servers, peer graph) load only for a client that presents a home's identity.
    Effect.flatMap(([c, Node]) => Node.tlsIdentityOf(c.tls)),
    Effect.provide(Home.vault(home))
  )

/** Connect with the command's credentials; retry while nothing answers, saying so on stderr. */
export const connect = (target: string, o: ConnectionOptions) =>
  Effect.gen(function*() {
    if (Option.isSome(o.fingerprint) && !isFingerprint(o.fingerprint.value)) {
      return yield* usage(
        `--fingerprint: expected ed25519:<64 hex> or SHA256:<64 hex>, got ${JSON.stringify(o.fingerprint.value)}`
      )
    }
    if (o.retries < 0) return yield* usage("--retries: expected 0 or more")
    const connectTimeout = yield* Shared.parseDuration("--connect-timeout", o.connectTimeout)
    const identity = Option.isSome(o.home) ? yield* homeIdentity(o.home.value) : undefined
    const credentials = compact({
      identity,
      token: Option.getOrUndefined(o.token),
      expectedFingerprint: Option.getOrUndefined(o.fingerprint)
    })
    const attempts = o.retries + 1
    const attempt = (n: number): ReturnType<typeof CallClient.connect> =>
      Effect.gen(function*() {
        // Say what is happening only when it takes a while.
        const notice = yield* Effect.fork(
          Effect.delay(Io.err(`connecting to ${target}${n > 1 ? ` (attempt ${n} of ${attempts})` : ""}…`), "1 second")
        )
        return yield* CallClient.connect(target, credentials, { connectTimeout }).pipe(
          Effect.ensuring(Fiber.interrupt(notice))
        )
      }).pipe(
        Effect.catchIf((e) => e.reason === "Connect" && n < attempts, (e) => {
          const wait = Duration.millis(500 * n)
          return Io.err(`alknet: ${e.message}; retrying in ${Duration.format(wait)} (attempt ${n + 1} of ${attempts})`).pipe(
            Effect.zipRight(Effect.sleep(wait)),
            Effect.zipRight(attempt(n + 1))
          )
        })
      )
    return yield* attempt(1).pipe(
      Effect.catchIf((e) => e.reason === "Untrusted", () =>
        new CliError({
          code: "Untrusted",
          message: `${target} presents a key no CA vouches for (an alknet node's own key): refusing to connect ` +
            "without --fingerprint; the node prints its fingerprint on its first line"
        }))
    )
  })
