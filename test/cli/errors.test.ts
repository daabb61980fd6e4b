/** What the CLI prints for a call error is bounded, whatever the remote sent (issue #20). */
import { describe, expect, it } from "@effect/vitest"
import * as Errors from "../../src/cli/errors.js"
import * as CallError from "../../src/errors/CallError.js"

describe("CLI call errors", () => {
  it("prints a bounded message and bounded details; details too deep to print say so instead of crashing", () => {
    const huge = "m".repeat(100_000)
    const error = CallError.fromPayload({ code: "INVALID_INPUT", message: huge, retryable: false, details: { v: huge } })
    const printed = Errors.classify(error)
    expect(printed.exitCode).toBe(Errors.ExitCode.CallInvalidInput)
    expect(printed.line).toContain("…(truncated, 100000 characters)")
    expect(printed.line).toContain("…(truncated, 100008 characters)") // {"v":"mmm…"}
    expect(printed.line.length).toBeLessThan(2 * CallError.MESSAGE_LIMIT + 200)
    const deep = JSON.parse("[".repeat(100_000) + "]".repeat(100_000))
    const deepDetails = Errors.classify(CallError.fromPayload({ code: "E", message: "m", retryable: false, details: deep }))
    expect(deepDetails.line).toBe("E: m details: (details is nested deeper than 64 levels)")
    expect(deepDetails.exitCode).toBe(Errors.ExitCode.CallDomain)
  })
})
