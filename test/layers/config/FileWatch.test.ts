/** Watchers belong to their layer's scope: closing the layer closes every one it opened. */
import { expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as fs from "node:fs"
import { createRequire, syncBuiltinESMExports } from "node:module"
import * as path from "node:path"
import * as ConfigFile from "../../../src/layers/ConfigFile.js"
import * as SqliteStore from "../../../src/layers/sqlite/SqliteStore.js"
import { tempDir } from "../../shared/identity.js"

/** Count the fs watchers open right now, by wrapping `fs.watch` for the duration of the test's scope. */
const countWatchers = Effect.acquireRelease(
  Effect.sync(() => {
    const nodeFs = createRequire(import.meta.url)("node:fs") as typeof fs
    const original = nodeFs.watch
    let open = 0
    nodeFs.watch = ((...args: Parameters<typeof fs.watch>) => {
      const watcher = original(...args)
      open += 1
      const close = watcher.close.bind(watcher)
      watcher.close = () => {
        open -= 1
        close()
      }
      return watcher
    }) as typeof fs.watch
    syncBuiltinESMExports()
    return { open: () => open, restore: () => (nodeFs.watch = original, syncBuiltinESMExports()) }
  }),
  (counter) => Effect.sync(counter.restore)
)

it.scoped("the SQLite and config-file layers close their watchers with their scope", () =>
  Effect.gen(function*() {
    const counter = yield* countWatchers
    const dir = yield* tempDir
    const file = path.join(dir, "config.json")
    fs.writeFileSync(file, "{}")
    const layers = Layer.merge(SqliteStore.layer({ filename: path.join(dir, "alknet.db") }), ConfigFile.layer(file))
    yield* Effect.scoped(Effect.gen(function*() {
      yield* Layer.build(layers)
      expect(counter.open()).toBe(2)
    }))
    expect(counter.open()).toBe(0)
  }))
