/**
 * README examples stay honest: a test file holds the example between `// --- README example (section "NAME") ---`
 * and `// --- end of README example ---`, and README's first `ts` block inside `<!-- section:NAME -->` must be that
 * code (with the package name for the source path), followed by the line that runs it.
 */
import { expect } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs/promises"

const between = (text: string, start: string, end: string): string => {
  const from = text.indexOf(start)
  const to = text.indexOf(end, from + start.length)
  if (from < 0 || to < 0) throw new Error(`markers not found: ${start} … ${end}`)
  return text.slice(from + start.length, to)
}

/** Check README's example of `section` is the code of the test file at `self` (its `import.meta.url`). */
export const expectReadmeExample = (self: string, section: string, run = "Effect.runPromise(main)") =>
  Effect.gen(function*() {
    const readme = yield* Effect.promise(() => fs.readFile(new URL("../../README.md", import.meta.url), "utf8"))
    const source = yield* Effect.promise(() => fs.readFile(new URL(self), "utf8"))
    const block = between(between(readme, `<!-- section:${section} -->`, `<!-- /section:${section} -->`), "```ts\n", "```")
      .trimEnd()
      .split("\n")
    expect(block.at(-1)).toMatch(new RegExp(`^${run.replace(/[()]/g, "\\$&")}`))
    const code = between(source, `// --- README example (section "${section}") ---\n`, "// --- end of README example ---")
    expect(block.slice(0, -1).join("\n").trim()).toBe(code.replace("\"../../src/index.js\"", "\"alknet\"").trim())
  })
