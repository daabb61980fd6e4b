#!/usr/bin/env node
// The `alknet` command. It runs the TypeScript sources in src/ directly: no build step.
//
// How: src/cli/main.ts and the packages it uses are bundled by esbuild (the compiler tsx uses) into
// node_modules/.cache/alknet/cli-<stamp>-<format>/, where the stamp covers every file under src/ (path, size, mtime)
// and this file: an edit rebuilds it (a second or two, once), an unchanged tree reuses it. Packages with native code
// stay external; each command evaluates only its own modules (`peer list` never loads QUIC). Why not tsx's loader
// hooks: they pass each of the ~800 modules a command loads through a worker thread, 5 s of CPU per command instead of
// under 1. They remain the fallback when the cache cannot be built.
//
// The bundle is one CommonJS script where Node can `require` ES modules (>= 20.19: the QUIC packages are ESM-only), run
// with V8's code cache: compiling 5 MB of JavaScript was the largest part of a command's start-up, and Node 20 caches
// no compiled code for ES modules. The cache is written once per command name (`call`, `peer`, …: each compiles the
// functions it runs) and rewritten when V8 rejects it. Older Node gets ES module chunks, without a code cache.
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import * as vm from "node:vm"

const self = fileURLToPath(import.meta.url)
const root = path.resolve(path.dirname(self), "..")
const entry = path.join(root, "src", "cli", "main.ts")

const stamp = () => {
  const hash = createHash("sha256")
  const add = (file, name) => {
    const stat = fs.statSync(file)
    if (stat.isDirectory()) for (const child of fs.readdirSync(file).sort()) add(path.join(file, child), `${name}/${child}`)
    else hash.update(`${name}\0${stat.size}\0${stat.mtimeMs}\n`)
  }
  add(self, "bin")
  add(path.join(root, "src"), "src")
  return hash.digest("hex").slice(0, 16)
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const script = process.features.require_module === true
const format = script ? "cjs" : "esm"

// The ESM-only packages with native code: `require`d by file (their exports map offers only `import`).
const esmOnly = ["@matrixai/quic", "@matrixai/logger"]
const esmOnlyPlugin = {
  name: "alknet-esm-only",
  setup(build) {
    const files = new Map(esmOnly.map((name) => [name, fileURLToPath(import.meta.resolve(name))]))
    const external = new Set(files.values())
    build.onResolve({ filter: /.*/ }, (args) => (external.has(args.path) ? { path: args.path, external: true } : undefined))
    build.onResolve({ filter: /^@matrixai\/(quic|logger)$/ }, (args) => ({ path: args.path, namespace: "esm-only" }))
    build.onLoad({ filter: /.*/, namespace: "esm-only" }, (args) => {
      const file = JSON.stringify(files.get(args.path))
      return { contents: `export * from ${file}; export { default } from ${file};`, loader: "js" }
    })
  }
}

const bundled = async () => {
  const cache = path.join(root, "node_modules", ".cache", "alknet")
  const name = `cli-${stamp()}-${format}`
  const dir = path.join(cache, name)
  const main = path.join(dir, script ? "main.cjs" : "main.js")
  if (fs.existsSync(main)) return main
  fs.mkdirSync(cache, { recursive: true })
  // One build at a time: others wait for it (several commands started at once on a fresh tree).
  const lock = path.join(cache, `${name}.lock`)
  let locked = false
  try {
    fs.closeSync(fs.openSync(lock, "wx"))
    locked = true
  } catch {
    // A lock older than a minute is left over from a build that died: build without it.
    const age = () => Date.now() - (fs.statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? 0)
    while (age() < 60_000 && !fs.existsSync(main)) await sleep(50)
    if (fs.existsSync(main)) return main
  }
  try {
    // A build takes seconds (much more on a busy machine): say why nothing happens yet.
    process.stderr.write("alknet: building the CLI bundle (first run after a change)…\n")
    const { build } = await import("esbuild")
    const temp = `${dir}.${process.pid}.tmp`
    const common = {
      entryPoints: { main: entry },
      outdir: temp,
      bundle: true,
      platform: "node",
      target: "node20",
      sourcemap: "linked",
      sourcesContent: false,
      logLevel: "error"
    }
    await build(
      script
        ? {
          ...common,
          format: "cjs",
          outExtension: { ".js": ".cjs" },
          // Native addons (and what they share with our code) load from node_modules; so does ssh2, whose optional
          // native parts esbuild cannot bundle.
          external: ["better-sqlite3", "ssh2"],
          plugins: [esmOnlyPlugin]
        }
        : {
          ...common,
          format: "esm",
          splitting: true,
          external: [...esmOnly, "better-sqlite3", "ssh2"],
          // Bundled CommonJS packages require Node's built-ins.
          banner: {
            js:
              'import { createRequire as __alknetRequire } from "node:module"; const require = __alknetRequire(import.meta.url);'
          }
        }
    )
    try {
      fs.renameSync(temp, dir) // atomic: a concurrent run sees no bundle or the whole of it
    } catch {
      fs.rmSync(temp, { recursive: true, force: true }) // another run got there first
    }
    // Older bundles go once nothing can still be loading their chunks (a running command imports them lazily).
    for (const old of fs.readdirSync(cache)) {
      const file = path.join(cache, old)
      const stale = Date.now() - (fs.statSync(file, { throwIfNoEntry: false })?.mtimeMs ?? Date.now()) > 600_000
      if (old.startsWith("cli-") && !old.startsWith(name) && stale) fs.rmSync(file, { recursive: true, force: true })
    }
    return main
  } finally {
    if (locked) fs.rmSync(lock, { force: true })
  }
}

// Stack traces (shown with --verbose) point into src/.
if (process.argv.includes("--verbose")) process.setSourceMapsEnabled(true)

// Help and version texts depend only on the command line, the bundle and whether colours are wanted: after the first
// time, they are printed from a copy kept beside the bundle, without loading the CLI (most of a --help's time).
const args = process.argv.slice(2)
const memoKey = () => {
  const words = args.every((a) => /^[a-z][a-z-]*$/.test(a) || ["--help", "-h", "--version"].includes(a))
  if (!words || !args.some((a) => ["--help", "-h", "--version"].includes(a))) return undefined
  const { NO_COLOR, FORCE_COLOR, TERM } = process.env
  const seen = JSON.stringify({ args, tty: process.stdout.isTTY === true, NO_COLOR, FORCE_COLOR, TERM })
  return createHash("sha256").update(seen).digest("hex").slice(0, 16)
}

/** Print the kept text, if any; else keep what this run prints, if it ends well. */
const memo = (main) => {
  const key = memoKey()
  if (key === undefined) return false
  const file = path.join(path.dirname(main), `memo-${key}.txt`)
  let kept
  try {
    kept = fs.readFileSync(file, "utf8")
  } catch {
    // Not kept yet.
  }
  if (kept !== undefined) {
    process.stdout.on("error", () => {}) // a reader that went away (| head -1) is not an error
    process.stdout.write(kept)
    return true
  }
  let text = ""
  let clean = true
  const write = process.stdout.write.bind(process.stdout)
  process.stdout.write = (chunk, ...rest) => {
    text += typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8")
    return write(chunk, ...rest)
  }
  const writeErr = process.stderr.write.bind(process.stderr)
  process.stderr.write = (...all) => {
    clean = false
    return writeErr(...all)
  }
  process.stdout.on("error", () => void (clean = false))
  process.on("exit", (code) => {
    if (code !== 0 || !clean || process.stdout.destroyed || text === "") return
    try {
      fs.writeFileSync(`${file}.${process.pid}`, text)
      fs.renameSync(`${file}.${process.pid}`, file)
    } catch {
      // Only a cache.
    }
  })
  return false
}

/** Run the CommonJS bundle with V8's code cache for this command (written at exit when there was none). */
const runScript = (main) => {
  // With --verbose, Node's own loader runs it: stack traces through the source map into src/, no code cache.
  if (process.argv.includes("--verbose")) return createRequire(import.meta.url)(main)
  const command = args.find((a) => /^[a-z][a-z-]*$/.test(a)) ?? "none"
  const cacheFile = path.join(path.dirname(main), `v8-${command}.bin`)
  let cachedData
  try {
    cachedData = fs.readFileSync(cacheFile)
  } catch {
    // None yet.
  }
  const source = `(function (exports, require, module, __filename, __dirname) {${fs.readFileSync(main, "utf8")}\n})`
  const compiled = new vm.Script(source, {
    filename: main,
    cachedData,
    importModuleDynamically: vm.constants?.USE_MAIN_CONTEXT_DEFAULT_LOADER
  })
  if (cachedData === undefined || compiled.cachedDataRejected) {
    // At exit, the functions this command ran are compiled too.
    process.once("exit", () => {
      try {
        fs.writeFileSync(`${cacheFile}.${process.pid}`, compiled.createCachedData())
        fs.renameSync(`${cacheFile}.${process.pid}`, cacheFile)
      } catch {
        // Only a cache.
      }
    })
  }
  const mod = { exports: {} }
  compiled.runInThisContext()(mod.exports, createRequire(main), mod, main, path.dirname(main))
}

let main
try {
  main = await bundled()
} catch {
  const { register } = await import("tsx/esm/api")
  register()
  main = entry
}
if (main === entry) await import(pathToFileURL(main).href)
else if (!memo(main)) {
  if (script) runScript(main)
  else await import(pathToFileURL(main).href)
}
