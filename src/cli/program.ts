/**
 * The `alknet` program as an Effect: `run(argv)` parses, runs one command and succeeds with its exit code. `main.ts`
 * runs it on the process; tests run it in-process with their own {@link Io.Stdio} and environment.
 *
 * Results go to stdout, progress and logs to stderr. A failure prints one line (see `errors.ts`) and exits with its
 * code; `--verbose` (anywhere on the command line) adds the full cause and debug logs. Before @effect/cli parses the
 * command line, {@link checkArgv} names an unknown subcommand or option (with the nearest known one) wherever it
 * stands; @effect/cli's own output (help, its parse errors) is tidied on the way out: no colours off a terminal or with
 * NO_COLOR, usage shown as `$ alknet peer add …`, errors prefixed `alknet:`.
 */
import * as AutoCorrect from "@effect/cli/AutoCorrect"
import * as CliConfig from "@effect/cli/CliConfig"
import * as Command from "@effect/cli/Command"
import type { Usage } from "@effect/cli"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { Cause, ConfigProvider, Console, Effect, Either, Exit, identity, Layer, Logger, LogLevel, Option } from "effect"
import { inspect } from "node:util"
import packageJson from "../../package.json" with { type: "json" }
import * as Logs from "../observability/Logs.js"
import * as Credential from "./credential.js"
import { ExitCode, fromExit, usage } from "./errors.js"
import * as Init from "./init.js"
import * as Io from "./io.js"
import * as NodeCommand from "./node.js"
import * as Peer from "./peer.js"
import * as Remote from "./remote.js"
import * as Ssh from "./ssh.js"
import * as Status from "./status.js"
import * as Token from "./token.js"

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyCommand = Command.Command<any, any, any, any>

/** A command of the tree, with its subcommands when it has some (@effect/cli does not expose nested ones). */
interface Entry {
  readonly name: string
  readonly command: AnyCommand
  readonly children?: ReadonlyArray<Entry>
}

const leaf = (command: AnyCommand): Entry => ({
  name: [...Command.getNames(command)][0]!,
  command
})

const parent = (command: AnyCommand, children: ReadonlyArray<AnyCommand>) => ({
  ...leaf(command),
  children: children.map(leaf)
})

const commands = [
  Init.command,
  NodeCommand.command,
  ...Remote.commands,
  Status.command,
  Peer.command,
  Token.command,
  Credential.command,
  Ssh.command
] as const

const nested = new Map<AnyCommand, ReadonlyArray<AnyCommand>>([
  [Peer.command, Peer.subcommands],
  [Token.command, Token.subcommands],
  [Credential.command, Credential.subcommands]
])

const root = Command.make("alknet").pipe(
  Command.withDescription(
    "Run an alknet node and talk to one. Global flag: --verbose (full error causes, debug logs). " +
      "Exit codes: see the README."
  ),
  Command.withSubcommands(commands)
)

const tree: Entry = {
  name: "alknet",
  command: root,
  children: commands.map((command) => {
    const children = nested.get(command)
    return children === undefined ? leaf(command) : parent(command, children)
  })
}

const cliConfig = CliConfig.make({ showBuiltIns: false })

const cli = Command.run(root, { name: "alknet", version: packageJson.version })

/** Flags @effect/cli handles itself on every command. */
const BUILT_IN = new Set(["--help", "-h", "--version", "--wizard", "--completions", "--log-level"])

/** The options of a command: name → whether it takes a value. */
const optionsOf = (command: AnyCommand): Map<string, boolean> => {
  const found = new Map<string, boolean>()
  const walk = (u: Usage.Usage): void => {
    switch (u._tag) {
      case "Named":
        for (const name of u.names) if (name.startsWith("-")) found.set(name, Option.isSome(u.acceptedValues))
        return
      case "Optional":
      case "Repeated":
        return walk(u.usage)
      case "Alternation":
      case "Concat":
        walk(u.left)
        return walk(u.right)
      default:
        return
    }
  }
  walk(Command.getUsage(command))
  return found
}

/** The candidates closest to `given` (within @effect/cli's auto-correct distance, or that it is a prefix of). */
const nearest = (given: string, candidates: Iterable<string>): string | undefined => {
  let best: { name: string; distance: number } | undefined
  for (const name of candidates) {
    const distance = name.startsWith(given) && given.length >= 3
      ? 1
      : AutoCorrect.levensteinDistance(given, name, cliConfig)
    if (distance <= cliConfig.autoCorrectLimit && (best === undefined || distance < best.distance)) {
      best = { name, distance }
    }
  }
  return best?.name
}

const quote = (name: string) => (name.startsWith("-") ? name : `'${name}'`)

const didYouMean = (given: string, candidates: Iterable<string>) => {
  const near = nearest(given, candidates)
  return near === undefined ? "" : ` (did you mean ${quote(near)}?)`
}

const isOptionLike = (arg: string) => arg.startsWith("-") && arg !== "-" && !/^-\d/.test(arg)

/** What the command line names: the command path (`["peer", "add"]`), and whether it asks for help. */
export interface Parsed {
  readonly path: ReadonlyArray<string>
  readonly builtIn: boolean
}

/**
 * Check the command line against the command tree before @effect/cli parses it, so that a misspelled subcommand or
 * option is named as such wherever it stands (@effect/cli reads an unknown option after the arguments as an
 * argument). Fails with a usage error that names the nearest known one and, for a subcommand, all of them.
 */
export const checkArgv = (args: ReadonlyArray<string>) =>
  Effect.suspend(() => {
    let entry = tree
    const path: Array<string> = []
    let i = 0
    while (entry.children !== undefined) {
      const arg = args[i]
      const names = entry.children.map((c) => c.name)
      const where = ["alknet", ...path].join(" ")
      const list = names.join(", ")
      if (arg === undefined) {
        if (path.length === 0) return Effect.succeed<Parsed>({ path, builtIn: true })
        return Effect.fail(usage(`${where} needs a subcommand: ${list}`))
      }
      if (BUILT_IN.has(arg.split("=")[0]!)) return Effect.succeed<Parsed>({ path, builtIn: true })
      if (isOptionLike(arg)) {
        return Effect.fail(usage(`${where} needs a subcommand (${list}) before ${arg.split("=")[0]}`))
      }
      const next = entry.children.find((c) => c.name === arg)
      if (next === undefined) {
        return Effect.fail(usage(
          path.length === 0
            ? `unknown command '${arg}'${didYouMean(arg, names)}; commands: ${list}`
            : `unknown subcommand '${arg}' of ${where}${didYouMean(arg, names)}; its subcommands: ${list}`
        ))
      }
      entry = next
      path.push(arg)
      i++
    }
    const options = optionsOf(entry.command)
    const where = ["alknet", ...path].join(" ")
    for (; i < args.length; i++) {
      const arg = args[i]!
      if (arg === "--") break
      if (!isOptionLike(arg)) continue
      const [name, inline] = [arg.split("=")[0]!, arg.includes("=")]
      if (BUILT_IN.has(name)) return Effect.succeed<Parsed>({ path, builtIn: true })
      const takesValue = options.get(name)
      if (takesValue === undefined) {
        return Effect.fail(usage(
          `unknown option ${name} for ${where}${didYouMean(name, options.keys())}; see ${where} --help`
        ))
      }
      if (takesValue && !inline) {
        if (i + 1 >= args.length) return Effect.fail(usage(`${name} needs a value; see ${where} --help`))
        i++
      }
    }
    return Effect.succeed<Parsed>({ path, builtIn: false })
  })

// ---------------------------------------------------------------------------------------------------------------
// @effect/cli's output, tidied

const ANSI = /\x1b\[[0-9;]*m/g

/** The type descriptions @effect/cli puts under every option and argument: they say nothing the usage line does not. */
const GENERIC = new Set([
  "A user-defined piece of text.",
  "A user-defined piece of text that is confidential.",
  "An integer.",
  "A floating point number.",
  "A true or false value."
])

/** Help text: without colours unless wanted, without the generic type lines, usage as `$ alknet peer add …`. */
export const tidyHelp = (text: string, colors: boolean, path: ReadonlyArray<string>) => {
  const lines = text.split("\n").filter((line) => !GENERIC.has(line.replace(ANSI, "").trim()))
  const squeezed = lines.filter((line, i) => !(line.trim() === "" && (lines[i - 1] ?? "").trim() === ""))
  const named = path.length === 0
    ? squeezed
    : squeezed.map((line) =>
      line.startsWith(`$ ${path.at(-1)}`) ? `$ alknet ${path.join(" ")}${line.slice(2 + path.at(-1)!.length)}` : line
    )
  const joined = named.join("\n")
  return colors ? joined : joined.replace(ANSI, "")
}

const format = (args: ReadonlyArray<unknown>) =>
  args.map((a) => (typeof a === "string" ? a : inspect(a, { colors: false, depth: 4 }))).join(" ")

/** A Console that writes to the run's streams: help tidied, @effect/cli's errors as `alknet: …` lines. */
const consoleFor = (stdio: Io.Stdio, base: Console.Console, path: ReadonlyArray<string>): Console.Console => {
  let indent = ""
  const outLine = (args: ReadonlyArray<unknown>) => stdio.out(`${tidyHelp(format(args), stdio.colors.out, path)}\n`)
  const errLine = (args: ReadonlyArray<unknown>) => stdio.err(`${indent}${format(args)}\n`)
  const cliError = (args: ReadonlyArray<unknown>) => {
    const text = format(args).replace(ANSI, "").trim()
    if (text !== "") stdio.err(`alknet: ${text}\n`)
  }
  const unsafe: Console.UnsafeConsole = {
    ...base.unsafe,
    log: (...args) => errLine(args),
    info: (...args) => errLine(args),
    warn: (...args) => errLine(args),
    error: (...args) => errLine(args),
    debug: (...args) => errLine(args),
    trace: (...args) => errLine(args),
    group: () => void (indent += "  "),
    groupCollapsed: () => void (indent += "  "),
    groupEnd: () => void (indent = indent.slice(2))
  }
  return {
    ...base,
    log: (...args) => Effect.sync(() => outLine(args)),
    info: (...args) => Effect.sync(() => errLine(args)),
    warn: (...args) => Effect.sync(() => errLine(args)),
    error: (...args) => Effect.sync(() => cliError(args)),
    unsafe
  }
}

// ---------------------------------------------------------------------------------------------------------------
// A run

export interface RunOptions {
  /** Where to write and read (default: the process's streams). */
  readonly stdio?: Io.Stdio
  /** The environment the options' fallbacks read (`ALKNET_HOME`, `ALKNET_TOKEN`; default: the process's). */
  readonly env?: Readonly<Record<string, string>>
}

/**
 * Run `alknet ARGS` (`argv` in `process.argv` shape: runtime, script, args); succeeds with the exit code. A run whose
 * stdout reader went away ends quietly with 0 (its command interrupted: a subscription is aborted).
 */
export const run = (argv: ReadonlyArray<string>, options: RunOptions = {}): Effect.Effect<number> =>
  Effect.suspend(() => {
    const stdio = options.stdio ?? Io.processStreams()
    const verbose = argv.includes("--verbose")
    const args = argv.slice(2).filter((arg) => arg !== "--verbose")
    const checked = Effect.runSync(Effect.either(checkArgv(args)))
    const path = Either.isRight(checked) ? checked.right.path : []
    const program = Either.isLeft(checked) ? Effect.fail(checked.left) : cli([...argv.slice(0, 2), ...args])
    const logger = Layer.mergeAll(
      // Readable lines on stderr; `alknet node --log-format json` switches its fiber to JSON lines (`Logs.currentFormat`).
      Logger.replace(Logger.defaultLogger, Logs.logger({ colors: stdio.colors.err })),
      Logger.minimumLogLevel(verbose ? LogLevel.Debug : LogLevel.Info)
    )
    return program.pipe(
      // The reader of stdout went away: stop (finalizers run: a subscription is aborted) and end quietly. Not a
      // node: it serves others, and writes nothing to stdout after its first lines.
      path[0] === "node" ? identity : Effect.raceFirst(Effect.zipRight(stdio.closed, Effect.interrupt)),
      Effect.exit,
      Effect.map((exit) => {
        if (Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause)) return ExitCode.Ok
        const failure = fromExit(exit, verbose)
        if (failure.line !== "") stdio.err(`${failure.line}\n`)
        if (failure.cause !== undefined) stdio.err(`${failure.cause}\n`)
        return failure.exitCode
      }),
      Effect.provide(Layer.mergeAll(NodeContext.layer, CliConfig.layer(cliConfig), logger)),
      (self) => Effect.flatMap(Effect.console, (base) => Effect.withConsole(self, consoleFor(stdio, base, path))),
      Effect.locally(Io.stdio, stdio),
      options.env === undefined ? identity : Effect.withConfigProvider(ConfigProvider.fromJson(options.env))
    )
  })
