import { expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { main } from "../../examples/head-workers.js"

it.live("examples/head-workers.ts runs: three nodes, routing, a reverse call, a deadline, a worker going away", () =>
  Effect.gen(function*() {
    const lines = yield* main
    expect(lines[0]).toMatch(/^head listening on quic:\/\/127\.0\.0\.1:\d+$/)
    expect(lines).toContain("head imported worker-a: container/exec (query), container/build (query), worker/report (query)")
    expect(lines).toContain(`fleet/exec on worker-b -> {"worker":"worker-b","output":"ran \\"uptime\\"","on_behalf_of":"fleet"}`)
    expect(lines).toContain(`fleet/exec on any worker -> {"worker":"worker-a","output":"ran \\"uptime\\"","on_behalf_of":"fleet"}`)
    expect(lines).toContain(`worker-a asks the head -> "welcome worker-a (authenticated as worker-a)"`)
    expect(lines).toContain(
      `fleet/exec build on worker-a with 200 ms -> TIMEOUT "request timed out"; worker-a's handler was interrupted`
    )
    expect(lines).toContain(`worker-b stopped: fleet/exec on worker-b -> INTERNAL "peer worker-b is not connected"`)
  }))
