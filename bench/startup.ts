/**
 * Start-up benchmark: `npm run bench:startup` (about 30 s on an idle machine; `RUNS=20` for steadier figures).
 *
 * How long a command takes from `exec` to exit, beside Node's own start-up (`node -e ''`) measured in the same run:
 *
 * - `node -e ''`: the floor, a process that loads nothing;
 * - `alknet --help`: printed from the text bin/alknet.js keeps beside the bundle after its first run (help and
 *   version texts depend only on the command line); "rendered" removes the kept texts first, as after a change:
 *   the CLI's own load (bin/alknet.js, the bundle, @effect/cli) and the rendering of the help;
 * - `alknet peer list --home H`: a local command that opens the home's SQLite store;
 * - `alknet call quic://… node/ping`: a call to a node on 127.0.0.1 (started here, kept running): QUIC, TLS with an
 *   ephemeral identity, one request.
 *
 * Each row runs `RUNS` times, the rows interleaved (a busy neighbour slows all of them alike); the table shows the
 * median wall time, the median CPU time of the process (user + system, read by a preload at exit: steadier than wall
 * time on a loaded machine) and both as ratios to `node -e ''`. Goals on an idle machine: `--help` ≤ 2×, `call` ≤ 4×.
 * The bundle is built (or found) before timing starts: the first run after a source change also bundles (printed).
 */
import { spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const RUNS = Number(process.env.RUNS ?? 10)
const BIN = fileURLToPath(new URL("../bin/alknet.js", import.meta.url))
const CACHE = fileURLToPath(new URL("../node_modules/.cache/alknet", import.meta.url))

/** Forget the help and version texts bin/alknet.js keeps beside its bundles. */
const forgetKeptTexts = () => {
  for (const bundle of fs.readdirSync(CACHE)) {
    const folder = path.join(CACHE, bundle)
    if (!fs.statSync(folder).isDirectory()) continue
    for (const file of fs.readdirSync(folder)) if (file.startsWith("memo-")) fs.rmSync(path.join(folder, file), { force: true })
  }
}
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "alknet-bench-startup-"))

// A preload that reports the process's own CPU time on fd 3 as it exits.
const preload = path.join(dir, "cpu.cjs")
fs.writeFileSync(
  preload,
  `process.on("exit", () => { try { const u = process.cpuUsage(); require("node:fs").writeSync(3, String((u.user + u.system) / 1000)) } catch {} })\n`
)

interface Sample {
  readonly wallMs: number
  readonly cpuMs: number
}

/** Run `node ARGS` once: wall time from spawn to exit, and the CPU time the process reported. */
const once = (args: ReadonlyArray<string>): Promise<Sample> =>
  new Promise((resolve, reject) => {
    const start = performance.now()
    const child = spawn(process.execPath, ["--require", preload, ...args], {
      stdio: ["ignore", "ignore", "pipe", "pipe"]
    })
    let stderr = ""
    let cpu = ""
    child.stderr!.on("data", (chunk) => (stderr += chunk))
    child.stdio[3]!.on("data", (chunk) => (cpu += chunk))
    child.on("close", (code) => {
      const wallMs = performance.now() - start
      if (code !== 0) return reject(new Error(`node ${args.join(" ")} exited ${code}: ${stderr}`))
      resolve({ wallMs, cpuMs: Number(cpu) })
    })
  })

const median = (values: ReadonlyArray<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const alknet = (...args: ReadonlyArray<string>) => {
  const result = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8" })
  if (result.status !== 0) throw new Error(`alknet ${args.join(" ")} exited ${result.status}: ${result.stderr}`)
  return result
}

const main = async () => {
  // Build the bundle (or find it) and create a home, untimed.
  const home = path.join(dir, "home")
  const bundling = alknet("init", "--home", home, "--json")
  if (bundling.stderr.includes("building the CLI bundle")) console.log("(bundled the CLI first)")

  // A node to call, on a free port.
  const node = spawn(process.execPath, [BIN, "node", "--home", home, "--listen", "127.0.0.1:0"], {
    stdio: ["ignore", "pipe", "pipe"]
  })
  let nodeErr = ""
  node.stderr!.on("data", (chunk) => (nodeErr += chunk))
  const first = await new Promise<string>((resolve, reject) => {
    let text = ""
    node.stdout!.on("data", (chunk) => {
      text += chunk
      if (text.includes("\n")) resolve(text.split("\n")[0]!)
    })
    node.on("exit", (code) => reject(new Error(`the node exited (${code}): ${nodeErr}`)))
  })
  const [, fingerprint, address] = /^alknet node (\S+) listening (\S+)$/.exec(first)!
  try {
    const rows: ReadonlyArray<readonly [string, ReadonlyArray<string>]> = [
      ["node -e ''", ["-e", ""]],
      ["alknet --help (kept text)", [BIN, "--help"]],
      ["alknet --help (rendered: none kept)", [BIN, "--help"]],
      ["alknet peer list --home H", [BIN, "peer", "list", "--home", home]],
      ["alknet call … node/ping (local node)", [BIN, "call", address!, "node/ping", "--fingerprint", fingerprint!]]
    ]
    // One untimed round warms the file cache.
    for (const [, args] of rows) await once(args)
    const samples = rows.map(() => [] as Array<Sample>)
    for (let run = 0; run < RUNS; run++) {
      for (const [i, [name, args]] of rows.entries()) {
        if (name.includes("none kept")) forgetKeptTexts()
        samples[i]!.push(await once(args))
      }
    }
    const wall = samples.map((s) => median(s.map((x) => x.wallMs)))
    const cpu = samples.map((s) => median(s.map((x) => x.cpuMs)))
    const table = rows.map(([name], i) => [
      name,
      wall[i]!.toFixed(0),
      `${(wall[i]! / wall[0]!).toFixed(1)}×`,
      cpu[i]!.toFixed(0),
      `${(cpu[i]! / cpu[0]!).toFixed(1)}×`
    ])
    const header = ["command", "wall ms (median)", "wall / node", "CPU ms (median)", "CPU / node"]
    const widths = header.map((h, i) => Math.max(h.length, ...table.map((r) => r[i]!.length)))
    const line = (cells: ReadonlyArray<string>) =>
      `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(" | ")} |`
    console.log(`start-up, ${RUNS} runs each (node ${process.version}, ${os.cpus().length} cores, load ${os.loadavg()[0]!.toFixed(1)})`)
    console.log(line(header))
    console.log(`|${widths.map((w, i) => (i === 0 ? "-".repeat(w + 2) : `${"-".repeat(w + 1)}:`)).join("|")}|`)
    for (const row of table) console.log(line(row))
  } finally {
    node.kill("SIGTERM")
    await new Promise((resolve) => node.once("exit", resolve))
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

await main()
