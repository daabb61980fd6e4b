import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // The CLI bundle is built once, before the tests that run `alknet` processes.
    globalSetup: ["test/bundle.setup.ts"],
    // Quiet unless something fails: what a passing test logged (a library's INFO lines, a node's progress) is dropped,
    // a failing test's is shown with it.
    silent: "passed-only",
    // Native addons (QUIC, SQLite) are happiest in child processes rather than worker threads.
    pool: "forks",
    testTimeout: 30_000,
    hookTimeout: 30_000
  }
})
