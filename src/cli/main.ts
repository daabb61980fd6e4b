/**
 * The `alknet` program on the process (see `program.ts` for what it does). A SIGINT / SIGTERM interrupts the running
 * command: exit 130, or 0 for `alknet node`, for which that is the normal end.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Exit } from "effect"
import { signalExitCode } from "./errors.js"
import { run } from "./program.js"
import * as Shutdown from "./shutdown.js"

Shutdown.armOnSignal(signalExitCode)

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
