/**
 * Many nodes, one store, from the command line: homes made with `alknet init --store postgres://…` share their peers,
 * API keys and credentials; a change made with the CLI on one home is applied by a node running from another, at
 * once. Needs `ALKNET_TEST_PG_URL` (see test/layers/pg/harness.ts); skipped without it.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { freshDatabase, serverUrl, SKIP_MESSAGE } from "../layers/pg/harness.js"
import { errorLines, initHome, lastLine, run, startNode, tempDir } from "./cli.js"

const whoami = (quic: string, fingerprint: string, token: string) =>
  run(["call", quic, "node/whoami", "--fingerprint", fingerprint, "--token", token])

/**
 * Ask until the answer satisfies `done` (the node applies a change when PostgreSQL delivers its notification: within
 * milliseconds, but after the writing command returned); the timeout is a hang guard, not a speed assertion.
 */
const until = <A>(ask: Effect.Effect<A>, done: (a: A) => boolean) =>
  ask.pipe(
    Effect.repeat({ until: done }),
    Effect.timeoutFail({ duration: "30 seconds", onTimeout: () => new Error("the node never applied the change") })
  )

if (serverUrl === undefined) {
  describe("alknet with a PostgreSQL store", () => {
    it.skip(SKIP_MESSAGE, () => {})
  })
} else {
  describe("alknet with a PostgreSQL store", () => {
    it.scopedLive("init --store; a token created and revoked on one home applies to the node of another at once", () =>
      Effect.gen(function*() {
        const url = yield* freshDatabase
        const dir = yield* tempDir
        const head = yield* initHome(dir, "head", "--store", url)
        const admin = yield* initHome(dir, "admin", "--store", url)
        const config = JSON.parse(yield* Effect.promise(() => fs.readFile(path.join(head.home, "config.json"), "utf8")))
        expect(config.store).toEqual({ type: "postgres", url })

        const node = yield* startNode(head.home)
        const created = yield* run(["token", "create", "--home", admin.home, "--scope", "ops"])
        expect(created.code).toBe(0)
        const token = created.stdout.trim()
        const prefix = token.slice(0, 8)
        // The node resolves it without a restart or a reload by hand.
        const known = yield* until(whoami(node.quic, node.fingerprint, token), (r) => r.code === 0)
        expect(known.code).toBe(0)
        expect(JSON.parse(known.stdout).identity.id).toBe(prefix)
        expect((yield* run(["token", "revoke", prefix, "--home", admin.home])).code).toBe(0)
        const revoked = yield* until(whoami(node.quic, node.fingerprint, token), (r) => r.code !== 0)
        expect(revoked.code).not.toBe(0)
        expect(revoked.stderr).toContain("the token was rejected by the node")

        // Peers and credentials written through one home are listed by the other.
        const added = yield* run(["peer", "add", "--home", admin.home, "--id", "w1", "--scope", "s"])
        expect(added.code).toBe(0)
        expect((yield* run(["peer", "list", "--home", head.home])).stdout).toMatch(/^w1\s+yes\s+s\b/m)
        const put = yield* run(["credential", "put", "--home", head.home, "svc"], { stdin: "value" })
        expect(put.code).toBe(0)
        expect(lastLine((yield* run(["credential", "list", "--home", admin.home])).stdout)).toMatch(/^svc\s+2$/)

        const status = yield* run(["status", "--home", head.home])
        expect(status.stdout).toContain(`store postgres 127.0.0.1:${new URL(url).port}${new URL(url).pathname} connected`)
      }))

  })
}

describe("alknet init --store", () => {
    it.scoped("init --store refuses a URL with a password (usage, exit 2), and an unreachable server (exit 9)", () =>
      Effect.gen(function*() {
        const dir = yield* tempDir
        const withPassword = yield* run([
          "init",
          "--home",
          path.join(dir, "a"),
          "--store",
          "postgres://u:secret@127.0.0.1:1/x"
        ])
        expect(withPassword.code).toBe(2)
        expect(errorLines(withPassword.stderr)).toEqual([
          expect.stringContaining("the URL holds a password: keep it out of the config")
        ])
        expect(withPassword.stderr).not.toContain("secret@")
        const unreachable = yield* run(["init", "--home", path.join(dir, "b"), "--store", "postgres://u@127.0.0.1:1/x"])
        expect(unreachable.code).toBe(9)
        expect(errorLines(unreachable.stderr)).toEqual(["alknet: postgres: cannot connect to 127.0.0.1:1/x: ECONNREFUSED"])
        // Nothing was left behind: the same init can be retried.
        expect(yield* Effect.promise(() => fs.readdir(dir))).toEqual(expect.not.arrayContaining(["a"]))
        const left = yield* Effect.promise(() => fs.readdir(path.join(dir, "b")).catch(() => []))
        expect(left).not.toContain("config.json")
        expect(left).not.toContain("mnemonic")
      }))
})
