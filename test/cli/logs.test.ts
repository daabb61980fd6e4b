/**
 * `alknet node`'s log format: config `log_format: "json"` gives one JSON object per stderr line; `--log-format`
 * overrides the config. The node logs its outbound link to a peer that is away at start (INFO), which is the line
 * checked here.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Cli from "./cli.js"

const away = { peer_id: "away", address: "ws://127.0.0.1:9", fingerprint: `ed25519:${"1".padStart(64, "0")}` }

describe("alknet node log format", () => {
  it.scopedLive("config log_format json: JSON lines on stderr; --log-format pretty overrides it", () =>
    Effect.gen(function*() {
      const dir = yield* Cli.tempDir
      const { home } = yield* Cli.initHomeInProcess(dir, "a", "--words", "12")
      yield* Cli.writeConfig(home, { log_format: "json", outbound: [away] })

      const json = yield* Effect.scoped(Effect.gen(function*() {
        const node = yield* Cli.startNode(home)
        return (yield* node.waitFor("stderr", /^\{.*"peer away: connecting.*\}$/m))[0]
      }))
      const record = JSON.parse(json)
      expect(record).toMatchObject({ level: "INFO", message: "peer away: connecting to ws://127.0.0.1:9", annotations: {}, spans: {} })
      expect(new Date(record.time).toISOString()).toBe(record.time)

      const pretty = yield* Effect.scoped(Effect.gen(function*() {
        const node = yield* Cli.startNode(home, ["--log-format", "pretty"])
        return (yield* node.waitFor("stderr", /^.*INFO.*peer away: connecting.*$/m))[0]
      }))
      expect(pretty.startsWith("{")).toBe(false)
      expect(pretty).toMatch(/^\[[^\]]+\] INFO /)
    }), { timeout: 120_000 })
})
