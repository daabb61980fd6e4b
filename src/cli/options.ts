/**
 * Options several commands share, and the parsers for their values (durations, `host:port`).
 */
import * as Options from "@effect/cli/Options"
import { Config, Duration, Effect, Either, Option, Schema } from "effect"
import { ListenAddress } from "../schema/Config.js"
import { DEFAULT_HOME } from "../layers/NodeHome.js"
import { usage } from "./errors.js"

/** `--home DIR` (default `$ALKNET_HOME`, else `./.alknet`). */
export const home = Options.text("home").pipe(
  Options.withPseudoName("DIR"),
  Options.withDescription("the node's home directory (default $ALKNET_HOME, else ./.alknet)"),
  Options.withFallbackConfig(Config.string("ALKNET_HOME").pipe(Config.withDefault(DEFAULT_HOME)))
)

/** `--home DIR` where it is optional: the identity a client presents. */
export const clientHome = Options.text("home").pipe(
  Options.withPseudoName("DIR"),
  Options.withDescription("present this home's node identity (default: an ephemeral one)"),
  Options.optional
)

/** A flag that may be given any number of times, none included (its usage shows it optional: `[--scope SCOPE...]`). */
export const repeatable = <A>(option: Options.Options<A>): Options.Options<Array<A>> =>
  option.pipe(Options.repeated, Options.optional, Options.map(Option.getOrElse((): Array<A> => [])))

/** `--json`: machine-readable output. */
export const json = Options.boolean("json").pipe(Options.withDescription("print JSON"))

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }

/** `500ms`, `30s`, `5m`, `2h`, `30d`, `1w`. */
export const parseDuration = (flag: string, text: string) =>
  Effect.suspend(() => {
    const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$/.exec(text.trim())
    return match === null
      ? Effect.fail(usage(`${flag}: expected a duration like 500ms, 30s, 5m, 2h or 30d, got ${JSON.stringify(text)}`))
      : Effect.succeed(Duration.millis(Number(match[1]) * UNITS[match[2]!]!))
  })

const decodeListen = Schema.decodeUnknownEither(ListenAddress)

/** `HOST:PORT` (IPv6 in brackets). */
export const parseListen = (flag: string, text: string) =>
  Either.match(decodeListen(text), {
    onLeft: () =>
      Effect.fail(usage(`${flag}: expected HOST:PORT, e.g. 127.0.0.1:4433 or [::1]:4433, got ${JSON.stringify(text)}`)),
    onRight: (address) => Effect.succeed(address)
  })
