import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // The CLI bundle is built once, before the tests that run `alknet` processes.
    globalSetup: ["test/bundle.setup.ts"],
    // Native addons (QUIC, SQLite) are happiest in child processes rather than worker threads.
    pool: "forks",
    testTimeout: 30_000,
    hookTimeout: 30_000
  }
})
