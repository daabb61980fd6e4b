/**
 * Before any test file runs: build the CLI bundle bin/alknet.js runs (node_modules/.cache/alknet), once. Tests that
 * start `alknet` processes then never wait for a build, nor see its progress line on stderr.
 */
import { spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"

export default function setup() {
  const bin = fileURLToPath(new URL("../bin/alknet.js", import.meta.url))
  const result = spawnSync(process.execPath, [bin, "--version"], { encoding: "utf8" })
  if (result.status !== 0) throw new Error(`building the CLI bundle failed (${result.status}): ${result.stderr}`)
}
