#!/usr/bin/env node
// The `alknet` command. It runs the TypeScript sources in src/ directly: no build step.
//
// How: src/cli/main.ts and the packages it uses are bundled by esbuild (the compiler tsx uses) into one file under
// node_modules/.cache/alknet/, named by a stamp of src/ (every file's path, size and mtime) and of this file: an edit rebuilds it
// (about a second), an unchanged tree reuses it. Packages with native code stay external. Why not tsx's loader hooks:
// they pass each of the ~800 modules a command loads through a worker thread — 5 s of CPU per command instead of 1.
// They remain the fallback when the cache cannot be written.
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const entry = path.join(root, "src", "cli", "main.ts")

/** Every file's path, size and mtime under `dir`, and this script's (whose build options shape the bundle). */
const stampOf = (dir) => {
  const hash = createHash("sha256")
  const self = fs.statSync(fileURLToPath(import.meta.url))
  hash.update(`${self.size}\0${self.mtimeMs}\n`)
  const walk = (d) => {
    for (const name of fs.readdirSync(d).sort()) {
      const file = path.join(d, name)
      const stat = fs.statSync(file)
      if (stat.isDirectory()) walk(file)
      else hash.update(`${path.relative(dir, file)}\0${stat.size}\0${stat.mtimeMs}\n`)
    }
  }
  walk(dir)
  return hash.digest("hex").slice(0, 16)
}

const bundled = async () => {
  const cache = path.join(root, "node_modules", ".cache", "alknet")
  const file = path.join(cache, `cli-${stampOf(path.join(root, "src"))}.mjs`)
  if (fs.existsSync(file)) return file
  const { build } = await import("esbuild")
  fs.mkdirSync(cache, { recursive: true })
  const temp = `${file}.${process.pid}.tmp`
  await build({
    entryPoints: [entry],
    outfile: temp,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    // Native addons (and what they share with our code) load from node_modules.
    external: ["@matrixai/quic", "@matrixai/logger", "better-sqlite3"],
    // Bundled CommonJS packages require Node's built-ins.
    banner: { js: "import { createRequire as __alknetRequire } from \"node:module\"; const require = __alknetRequire(import.meta.url);" },
    sourcemap: "linked",
    sourcesContent: false,
    logLevel: "error"
  })
  // esbuild names the map after the temporary file: point the bundle at the final one.
  fs.renameSync(`${temp}.map`, `${file}.map`)
  fs.writeFileSync(temp, fs.readFileSync(temp, "utf8").replace(/sourceMappingURL=.*$/m, `sourceMappingURL=${path.basename(file)}.map`))
  fs.renameSync(temp, file) // atomic: a concurrent run sees the old state or the whole new file
  for (const old of fs.readdirSync(cache)) {
    if (old.startsWith("cli-") && !old.startsWith(path.basename(file))) fs.rmSync(path.join(cache, old), { force: true })
  }
  return file
}

// Stack traces (shown with --verbose) point into src/.
if (process.argv.includes("--verbose")) process.setSourceMapsEnabled(true)

let main
try {
  main = await bundled()
} catch {
  const { register } = await import("tsx/esm/api")
  register()
  main = entry
}
await import(pathToFileURL(main).href)
