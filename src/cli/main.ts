/**
 * The `alknet` program: the commands, and how a run ends.
 *
 * Results go to stdout, progress and logs to stderr. A failure prints one line (see `errors.ts`) and exits with its
 * code; `--verbose` (anywhere on the command line) adds the full cause and debug logs.
 */
import { CliConfig, Command } from "@effect/cli"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Cause, Effect, Exit, Layer, Logger, LogLevel } from "effect"
import packageJson from "../../package.json" with { type: "json" }
import * as Credential from "./credential.js"
import { fromExit, signalExitCode } from "./errors.js"
import * as Init from "./init.js"
import * as Io from "./io.js"
import * as NodeCommand from "./node.js"
import * as Peer from "./peer.js"
import * as Remote from "./remote.js"
import * as Status from "./status.js"
import * as Token from "./token.js"

const root = Command.make("alknet").pipe(
  Command.withDescription(
    "Run an alknet node and talk to one. Global flag: --verbose (full error causes, debug logs). " +
      "Exit codes: see the README."
  ),
  Command.withSubcommands([
    Init.command,
    NodeCommand.command,
    ...Remote.commands,
    Status.command,
    Peer.command,
    Token.command,
    Credential.command
  ])
)

const cli = Command.run(root, { name: "alknet", version: packageJson.version })

/** Run the CLI on `argv` (`process.argv` shape); succeeds with the exit code. */
const run = (argv: ReadonlyArray<string>) => {
  const verbose = argv.includes("--verbose")
  const logger = Layer.mergeAll(
    Logger.replace(Logger.defaultLogger, Logger.prettyLogger({ stderr: true, colors: "auto", mode: "tty" })),
    Logger.minimumLogLevel(verbose ? LogLevel.Debug : LogLevel.Info)
  )
  return cli(argv.filter((arg) => arg !== "--verbose")).pipe(
    Effect.exit,
    Effect.flatMap((exit) => {
      const failure = fromExit(exit, verbose)
      return Effect.as(
        Effect.all([
          failure.line === "" ? Effect.void : Io.err(failure.line),
          failure.cause === undefined ? Effect.void : Io.err(failure.cause)
        ]),
        failure.exitCode
      )
    }),
    Effect.provide(Layer.mergeAll(NodeContext.layer, CliConfig.layer({ showBuiltIns: false }), logger))
  )
}

NodeRuntime.runMain(run(process.argv), {
  disableErrorReporting: true,
  disablePrettyLogger: true,
  teardown: (exit) => {
    // Exit explicitly: an idle handle (a closed socket's timer, stdin) must not keep a finished command alive.
    process.exit(
      Exit.isSuccess(exit) ? Number(exit.value) : Cause.isInterruptedOnly(exit.cause) ? signalExitCode() : 1
    )
  }
})
