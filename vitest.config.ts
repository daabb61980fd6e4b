import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Native addons (QUIC, SQLite) are happiest in child processes rather than worker threads.
    pool: "forks",
    testTimeout: 30_000,
    hookTimeout: 30_000
  }
})
