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

/** The files of every bundle folder whose name passes `keep`. */
const cached = (keep: (file: string) => boolean) =>
  fs.readdirSync(CACHE)
    .map((name) => path.join(CACHE, name))
    .filter((dir) => fs.statSync(dir).isDirectory())
    .flatMap((dir) => fs.readdirSync(dir).filter(keep).map((file) => path.join(dir, file)))

/** Remove them (what the launcher keeps is only a cache: a run without it renders or compiles again). */
const forget = (keep: (file: string) => boolean) => {
  for (const file of cached(keep)) fs.rmSync(file, { force: true })
}

const isKeptText = (file: string) => file.startsWith("memo-")
const isTokenCache = (file: string) => file === "v8-token.bin"

it.live("help and version texts: the kept copy is what the program prints", () =>
  Effect.gen(function*() {
    forget(isKeptText)
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
    expect(cached(isKeptText).length).toBeGreaterThanOrEqual(4)
  }), { timeout: 120_000 })

it.live.skipIf(process.features.require_module !== true)(
  "the code cache: written for a command, and a damaged one is replaced without changing the output",
  () =>
    Effect.gen(function*() {
      const dir = yield* Cli.tempDir
      const { home } = yield* Cli.initHomeInProcess(dir, "home")
      const args = ["token", "list", "--home", home]
      forget(isTokenCache)
      const first = yield* Cli.run(args)
      expect(first.code, first.stderr).toBe(0)
      const written = cached(isTokenCache)
      expect(written).toHaveLength(1)
      const cache = written[0]!
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
