/**
 * The package as a user installs it from a tarball or a git URL: `npm pack` (which runs `prepare`, the build), the
 * tarball unpacked into a fresh project's node_modules, and `import("alknet")` from an ES module of that project,
 * in a child process.
 *
 * Nothing is downloaded: the project's node_modules holds the unpacked alknet and, beside it, links into this
 * checkout's node_modules for exactly the packages alknet's package.json declares (dependencies and
 * peerDependencies). A runtime import of an undeclared package (a devDependency, say) therefore fails here as it
 * would for a user.
 *
 * The child counts native addons as they load (`process.dlopen`): none may load on import; QUIC's and SQLite's load
 * when a node listens and a store opens. And README's library example, as a user would paste it into a TypeScript
 * project (strict, NodeNext, no skipLibCheck), compiles against the packed types and runs.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"

const ROOT = fileURLToPath(new URL("../..", import.meta.url))
const exec = promisify(execFile)

/** The consumer: an ES module of a project that depends on alknet. Prints one JSON report on stdout. */
const CONSUMER = `
const addons = []
const dlopen = process.dlopen
process.dlopen = function (module, filename, ...rest) {
  addons.push(filename)
  return dlopen.call(this, module, filename, ...rest)
}

const alknet = await import("alknet")
const atImport = [...addons]
const reflectPatched = typeof Reflect.getMetadata === "function"

const { Effect, Schema } = await import("effect")
const { CallClient, IdentityStore, Node, Operation, SqliteStore } = alknet
const hello = Operation.query({
  name: "demo/hello",
  input: Schema.Struct({ name: Schema.String }),
  output: Schema.String,
  handler: ({ name }) => Effect.succeed("hello, " + name)
})
const greeting = await Effect.runPromise(
  Effect.gen(function* () {
    const node = yield* Node.Node
    const client = yield* CallClient.connect(node.transports[0].address, { expectedFingerprint: node.fingerprint })
    return yield* client.call("demo/hello", { name: "Ada" })
  }).pipe(Effect.scoped, Effect.provide(Node.layerMemory({ operations: [hello] })))
)
const peers = await Effect.runPromise(
  Effect.flatMap(IdentityStore.IdentityStore, (store) => store.listPeers).pipe(
    Effect.provide(SqliteStore.layer({ filename: process.argv[2] }))
  )
)

console.log(JSON.stringify({
  resolved: import.meta.resolve("alknet"),
  exports: Object.keys(alknet),
  atImport,
  reflectPatched,
  greeting,
  peers,
  afterUse: addons
}))
`

interface Report {
  readonly resolved: string
  readonly exports: ReadonlyArray<string>
  readonly atImport: ReadonlyArray<string>
  readonly reflectPatched: boolean
  readonly greeting: unknown
  readonly peers: ReadonlyArray<unknown>
  readonly afterUse: ReadonlyArray<string>
}

const between = (text: string, start: string, end: string): string => {
  const from = text.indexOf(start)
  const to = text.indexOf(end, from + start.length)
  if (from < 0 || to < 0) throw new Error(`markers not found: ${start} … ${end}`)
  return text.slice(from + start.length, to)
}

/** The user's own TypeScript setup: its compiler and Node's types (from this checkout), a strict NodeNext config. */
const TSCONFIG = {
  compilerOptions: {
    target: "ES2022",
    module: "NodeNext",
    moduleResolution: "NodeNext",
    strict: true,
    skipLibCheck: false,
    types: ["node"]
  },
  files: ["readme.ts"]
}

let temp = ""
let project = ""
let packed: ReadonlyArray<string> = []
let manifest: { readonly dependencies?: Record<string, string>; readonly peerDependencies?: Record<string, string> } = {}
let report: Report

beforeAll(async () => {
  temp = await fs.mkdtemp(path.join(os.tmpdir(), "alknet-pack-"))
  // Pack as a git-URL install or `npm publish` would: prepare builds dist/ first.
  const { stdout } = await exec("npm", ["pack", "--json", "--pack-destination", temp], {
    cwd: ROOT,
    maxBuffer: 64 * 1024 * 1024
  })
  const [tarball] = JSON.parse(stdout) as ReadonlyArray<{ filename: string; files: ReadonlyArray<{ path: string }> }>
  packed = tarball!.files.map((file) => file.path)

  // A fresh project with alknet installed from the tarball.
  project = path.join(temp, "project")
  const modules = path.join(project, "node_modules")
  await fs.mkdir(modules, { recursive: true })
  await exec("tar", ["-xzf", path.join(temp, tarball!.filename), "-C", modules])
  await fs.rename(path.join(modules, "package"), path.join(modules, "alknet"))
  manifest = JSON.parse(await fs.readFile(path.join(modules, "alknet", "package.json"), "utf8"))
  const declared = [...Object.keys(manifest.dependencies ?? {}), ...Object.keys(manifest.peerDependencies ?? {})]
  for (const name of [...declared, "typescript", "@types/node"]) {
    await fs.mkdir(path.dirname(path.join(modules, name)), { recursive: true })
    await fs.symlink(path.join(ROOT, "node_modules", name), path.join(modules, name), "dir")
  }
  await fs.writeFile(path.join(project, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }))
  await fs.writeFile(path.join(project, "main.js"), CONSUMER)
  const readme = await fs.readFile(path.join(ROOT, "README.md"), "utf8")
  await fs.writeFile(path.join(project, "readme.ts"), between(between(readme, "<!-- section:library -->", "<!-- /section:library -->"), "```ts\n", "```"))
  await fs.writeFile(path.join(project, "tsconfig.json"), JSON.stringify(TSCONFIG))

  const run = await exec(process.execPath, ["main.js", path.join(temp, "store.db")], { cwd: project })
  report = JSON.parse(run.stdout)
}, 600_000)

afterAll(async () => {
  if (temp !== "") await fs.rm(temp, { recursive: true, force: true })
})

describe("the package from a fresh install", () => {
  it("the tarball carries the built API, its sources and the bin, and no tests", () => {
    expect(packed).toEqual(expect.arrayContaining(["package.json", "README.md", "dist/index.js", "dist/index.d.ts", "bin/alknet.js"]))
    expect(packed.filter((file) => !/^(dist|src|bin)\/|^(package\.json|README\.md|LICENSE)$/.test(file))).toEqual([])
    // Every module of the public API is built: what index.js imports is in the tarball.
    expect(packed).toContain("dist/layers/Node.js")
    expect(packed).toContain("dist/layers/quic/Quic.js")
  })

  it("effect and the @effect packages a user shares are exact peer dependencies, not bundled copies", () => {
    const peers = manifest.peerDependencies ?? {}
    expect(Object.keys(peers)).toEqual(expect.arrayContaining(["effect", "@effect/platform", "@effect/platform-node"]))
    for (const [name, version] of Object.entries(peers)) {
      expect(version, name).toMatch(/^\d+\.\d+\.\d+$/)
      expect(manifest.dependencies ?? {}, name).not.toHaveProperty(name)
    }
  })

  it("import from \"alknet\" resolves to the installed package, loads no native addon and patches no global", () => {
    expect(report.resolved).toBe(`file://${path.join(temp, "project", "node_modules", "alknet", "dist", "index.js")}`)
    expect(report.exports).toEqual(
      expect.arrayContaining(["Node", "CallClient", "Operation", "Vault", "Quic", "SqliteStore", "WebSocket"])
    )
    expect(report.atImport).toEqual([])
    expect(report.reflectPatched).toBe(false) // the certificate library's polyfill waits until a certificate is made
  })

  it("a node serves and a client calls it; QUIC and SQLite load their addons when used", () => {
    expect(report.greeting).toBe("hello, Ada")
    expect(report.peers).toEqual([])
    expect(report.afterUse.some((file) => /quic/.test(file))).toBe(true)
    expect(report.afterUse.some((file) => /better_sqlite3\.node$/.test(file))).toBe(true)
  })

  it("README's library example compiles against the packed types and runs", async () => {
    const tsc = path.join(project, "node_modules", "typescript", "bin", "tsc")
    // tsc prints its errors on stdout: show them when it fails.
    await exec(process.execPath, [tsc, "-p", project], { cwd: project }).catch((error: { stdout?: string }) => {
      throw new Error(`tsc failed:\n${error.stdout ?? String(error)}`)
    })
    const { stdout } = await exec(process.execPath, ["readme.js"], { cwd: project })
    expect(stdout.trim()).toBe("hello, Ada")
  }, 600_000)
})
