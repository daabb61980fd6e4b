/**
 * bin/alknet.js, the launcher: what it keeps beside the bundle must never change what a command prints.
 *
 * - Help and version texts, printed from the kept copy after their first run, are the program's own (compared with
 *   the same command run in-process, which renders it).
 * - The V8 code cache it keeps per command (Node >= 20.19, the CommonJS bundle) is only a cache: a damaged one is
 *   rejected by V8 and rewritten, and the command's output is the same.
 */
import { expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as Cli from "../cli/cli.js"

const CACHE = fileURLToPath(new URL("../../node_modules/.cache/alknet", import.meta.url))

/** The bundle folder bin/alknet.js used last (the newest one with a bundle in it). */
const bundleDir = () =>
  fs.readdirSync(CACHE)
    .map((name) => path.join(CACHE, name))
    .filter((dir) => fs.existsSync(path.join(dir, "main.cjs")) || fs.existsSync(path.join(dir, "main.js")))
    .sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs)[0]!

it.live("help and version texts: the kept copy is what the program prints", () =>
  Effect.gen(function*() {
    for (const args of [["--help"], ["peer", "--help"], ["call", "--help"], ["--version"]]) {
      const rendered = yield* Cli.runInProcess(args)
      expect(rendered.code).toBe(0)
      // Twice as a process: the first may render and keep it, the second prints the kept copy.
      const first = yield* Cli.run(args)
      const second = yield* Cli.run(args)
      for (const result of [first, second]) {
        expect(result.code, result.stderr).toBe(0)
        expect(result.stdout).toBe(rendered.stdout)
      }
    }
    const kept = fs.readdirSync(bundleDir()).filter((file) => file.startsWith("memo-"))
    expect(kept.length).toBeGreaterThanOrEqual(4)
  }), { timeout: 120_000 })

it.live.skipIf(process.features.require_module !== true)(
  "the code cache: written for a command, and a damaged one is replaced without changing the output",
  () =>
    Effect.gen(function*() {
      const dir = yield* Cli.tempDir
      const { home } = yield* Cli.initHomeInProcess(dir, "home")
      const args = ["token", "list", "--home", home]
      const first = yield* Cli.run(args)
      expect(first.code, first.stderr).toBe(0)
      const cache = path.join(bundleDir(), "v8-token.bin")
      expect(fs.existsSync(cache)).toBe(true)
      fs.writeFileSync(cache, Buffer.from("not a code cache"))
      const damaged = yield* Cli.run(args)
      expect(damaged.code, damaged.stderr).toBe(0)
      expect(damaged.stdout).toBe(first.stdout)
      expect(fs.readFileSync(cache).length).toBeGreaterThan(1000) // rewritten at exit
      const again = yield* Cli.run(args)
      expect(again.stdout).toBe(first.stdout)
    }).pipe(Effect.scoped),
  { timeout: 120_000 }
)
