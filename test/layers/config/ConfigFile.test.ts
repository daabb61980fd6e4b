import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Logger, Queue, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as ConfigFile from "../../../src/layers/ConfigFile.js"
import { ApiKeyEntry } from "../../../src/schema/ApiKeyEntry.js"
import { defaultRateLimits } from "../../../src/schema/Config.js"
import { PeerEntry } from "../../../src/schema/PeerEntry.js"
import { IdentityProvider } from "../../../src/services/IdentityProvider.js"
import { NodeConfig } from "../../../src/services/NodeConfig.js"
import { ed25519, idOf, tempDir } from "../../shared/identity.js"
import { resolutionSuite } from "../../shared/resolutionSuite.js"

const writeJson = (file: string, value: unknown) => fs.writeFileSync(file, JSON.stringify(value, null, 2))

/** Replace the file the way editors and deploy tools do: write a temporary file, rename it over the original. */
const replaceAtomically = (file: string, value: unknown) => {
  const temp = `${file}.tmp-${process.pid}`
  if (typeof value === "string") fs.writeFileSync(temp, value)
  else writeJson(temp, value)
  fs.renameSync(temp, file)
}

/**
 * Wait for the reload of an in-place write. The watcher may read the file mid-write (truncated) and reject that
 * partial content — that is the behaviour under test: the previous config stays until the write completes.
 */
const untilReloaded = (events: Queue.Dequeue<ConfigFile.ReloadEvent>) =>
  Queue.take(events).pipe(Effect.repeat({ until: (event) => event._tag === "Reloaded" }))

resolutionSuite("config file", (peers, apiKeys) =>
  Layer.unwrapScoped(Effect.map(tempDir, (dir) => {
    const file = path.join(dir, "alknet.json")
    writeJson(file, {
      peers: peers.map((p) => Schema.encodeSync(PeerEntry)(p)),
      api_keys: apiKeys.map((k) => Schema.encodeSync(ApiKeyEntry)(k))
    })
    return ConfigFile.layer(file)
  })))

/** A config file in a temp dir, its layer (short debounce) and a subscription to reload events. */
const setup = (initial: unknown, logLines?: Array<string>) =>
  Effect.gen(function*() {
    const dir = yield* tempDir
    const file = path.join(dir, "alknet.json")
    writeJson(file, initial)
    const logger = Logger.replace(
      Logger.defaultLogger,
      Logger.make(({ logLevel, message }) => {
        logLines?.push(`${logLevel.label} ${Array.isArray(message) ? message.join(" ") : String(message)}`)
      })
    )
    const context = yield* Layer.build(ConfigFile.layer(file, { debounce: "10 millis" }).pipe(Layer.provide(logger)))
    const config = Effect.provide(NodeConfig, context)
    const provider = yield* Effect.provide(IdentityProvider, context)
    const handle = yield* Effect.provide(ConfigFile.ConfigFile, context)
    const events = yield* handle.events
    return { dir, file, config, provider, handle, events }
  })

const peerA = { peer_id: "a", fingerprints: [ed25519(1)] }
const peerB = { peer_id: "b", fingerprints: [ed25519(2)] }

describe("ConfigFile", () => {
  it.scoped("loads defaults, resolves relative paths against the file's directory", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const file = path.join(dir, "node.json")
      writeJson(file, { data_dir: "state", tls: { type: "x509", cert_file: "c.pem", key_file: "/abs/k.pem" } })
      const config = yield* ConfigFile.load(file)
      expect(config.data_dir).toBe(path.join(dir, "state"))
      expect(config.tls).toEqual({ type: "x509", cert_file: path.join(dir, "c.pem"), key_file: "/abs/k.pem" })
      expect(config.listen).toEqual({ host: "127.0.0.1", port: 4433 })
      expect(config.drain_timeout_ms).toBe(2000)
      expect(config.rate_limits).toEqual(defaultRateLimits)
    }))

  it.scoped("a missing or invalid file at start fails the layer with a ConfigError naming the problem", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const missing = yield* Effect.flip(ConfigFile.load(path.join(dir, "nope.json")))
      expect(missing.reason).toBe("Read")
      expect(missing.message).toContain("ENOENT")
      const file = path.join(dir, "bad.json")
      writeJson(file, { peers: [peerA, { ...peerB, enabled: "yes" }] })
      const invalid = yield* Effect.flip(Effect.provide(NodeConfig, ConfigFile.layer(file)))
      expect(invalid.reason).toBe("Invalid")
      expect(invalid.message).toContain("peers[1].enabled")
    }))

  it.scoped("a file nested deeper than 64 levels is a ConfigError, at start and on reload (nothing overflows)", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const file = path.join(dir, "deep.json")
      fs.writeFileSync(file, `{"peers": ${"[".repeat(100_000)}${"]".repeat(100_000)}}`)
      const deep = yield* Effect.flip(ConfigFile.load(file))
      expect(deep.reason).toBe("Invalid")
      expect(deep.message).toBe(`invalid ${file}: config is nested deeper than 64 levels`)
      const { events, file: live } = yield* setup({ peers: [peerA] })
      replaceAtomically(live, `{"outbound": ${"[".repeat(1000)}${"]".repeat(1000)}}`)
      const rejected = yield* Queue.take(events)
      expect(rejected._tag === "Rejected" && rejected.error.message).toContain("config is nested deeper than 64 levels")
    }))

  it.scoped("a valid change is applied without a restart: peers, API keys and rate limits", () =>
    Effect.gen(function*() {
      const { config, events, file, provider } = yield* setup({ peers: [peerA] })
      expect(idOf(yield* provider.resolveFingerprint(ed25519(1)))).toBe("a")
      writeJson(file, { peers: [peerB], rate_limits: { max_connections_per_ip: 3 } })
      expect(yield* untilReloaded(events)).toEqual(ConfigFile.ReloadEvent.Reloaded({ peers: 1, apiKeys: 0 }))
      expect(idOf(yield* provider.resolveFingerprint(ed25519(1)))).toBeUndefined()
      expect(idOf(yield* provider.resolveFingerprint(ed25519(2)))).toBe("b")
      const dynamic = yield* Effect.flatMap(config, (c) => c.dynamic)
      expect(dynamic.rate_limits).toEqual({ ...defaultRateLimits, max_connections_per_ip: 3 })
    }))

  it.scoped("a file replaced by rename (write-temp-then-rename) is picked up, again and again", () =>
    Effect.gen(function*() {
      const { events, file, provider } = yield* setup({ peers: [peerA] })
      for (const [n, next] of [[2, peerB], [1, peerA], [2, peerB]] as const) {
        replaceAtomically(file, { peers: [next] })
        expect((yield* Queue.take(events))._tag).toBe("Reloaded")
        expect(idOf(yield* provider.resolveFingerprint(ed25519(n)))).toBe(next.peer_id)
      }
    }))

  it.scoped("an invalid file is rejected with a log line naming the field; the previous config stays in force", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const { config, events, file, provider } = yield* setup({ peers: [peerA] }, lines)
      const cases = [
        ["{ \"peers\": [", "config: "],
        [JSON.stringify({ peers: [peerA, { ...peerB, peer_id: "a" }] }), "peers[1].peer_id: duplicate peer_id \"a\""],
        [JSON.stringify({ peers: [{ ...peerB, fingerprints: ["ed25519:short"] }] }), "peers[0].fingerprints[0]"],
        [JSON.stringify({ rate_limits: { max_auth_attempts: 0 } }), "rate_limits.max_auth_attempts"],
        [JSON.stringify({ peers: [peerB], api_key: [] }), "api_key: is unexpected"]
      ] as const
      for (const [text, field] of cases) {
        lines.length = 0
        replaceAtomically(file, text)
        const event = yield* Queue.take(events)
        if (event._tag !== "Rejected") throw new Error(`expected a rejection for ${text}`)
        expect(event.error.message).toContain(field)
        const logged = lines.filter((l) => l.startsWith("ERROR"))
        expect(logged).toHaveLength(1)
        expect(logged[0]).toContain("previous config stays in force")
        expect(logged[0]).toContain(field)
        expect(idOf(yield* provider.resolveFingerprint(ed25519(1)))).toBe("a")
        expect(idOf(yield* provider.resolveFingerprint(ed25519(2)))).toBeUndefined()
      }
      const dynamic = yield* Effect.flatMap(config, (c) => c.dynamic)
      expect(dynamic.peers.map((p) => p.peer_id)).toEqual(["a"])
      // A valid file afterwards is applied as usual.
      replaceAtomically(file, { peers: [peerB] })
      expect((yield* Queue.take(events))._tag).toBe("Reloaded")
      expect(idOf(yield* provider.resolveFingerprint(ed25519(2)))).toBe("b")
    }))

  it.scoped("a deleted file keeps the previous config; a changed static field is ignored with a warning", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const { config, events, file, provider } = yield* setup({ listen: "127.0.0.1:7000", peers: [peerA] }, lines)
      fs.rmSync(file)
      const gone = yield* Queue.take(events)
      expect(gone._tag === "Rejected" && gone.error.reason).toBe("Read")
      expect(idOf(yield* provider.resolveFingerprint(ed25519(1)))).toBe("a")
      replaceAtomically(file, { listen: "0.0.0.0:7001", peers: [peerB] })
      expect((yield* Queue.take(events))._tag).toBe("Reloaded")
      expect(idOf(yield* provider.resolveFingerprint(ed25519(2)))).toBe("b")
      expect((yield* config).static.listen).toEqual({ host: "127.0.0.1", port: 7000 })
      expect(lines.some((l) => l.startsWith("WARN") && l.includes("listen changed"))).toBe(true)
    }))

  it.scoped("reload (local, e.g. on SIGHUP) re-reads now and fails with the field for an invalid file", () =>
    Effect.gen(function*() {
      const { file, handle, provider } = yield* setup({ peers: [peerA] })
      // Write and reload before the watcher's debounce can: reload itself must apply it.
      writeJson(file, { peers: [peerA, peerB] })
      yield* handle.reload
      expect(idOf(yield* provider.resolveFingerprint(ed25519(2)))).toBe("b")
      writeJson(file, { peers: [peerA, { peer_id: "" }] })
      const error = yield* Effect.flip(handle.reload)
      expect(error.message).toContain("peers[1].peer_id")
      expect(idOf(yield* provider.resolveFingerprint(ed25519(2)))).toBe("b")
    }))
})
