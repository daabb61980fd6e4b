import { describe, expect, it, vi } from "@effect/vitest"
import { Cause, Effect, Either, Logger, Redacted, Tracer } from "effect"
import { inspect } from "node:util"
import { HdPath, Vault } from "../../src/index.js"
import * as Logs from "../../src/observability/Logs.js"
import { ABOUT, seedOf } from "./VaultReference.js"

/** Every spelling of `secret` bytes a serializer might produce. */
const spellings = (secret: Uint8Array) => {
  const b = Buffer.from(secret)
  const head = Array.from(b.subarray(0, 8))
  return [
    b.toString("hex"),
    b.toString("base64").slice(0, 40),
    b.toString("base64url").slice(0, 40),
    head.join(","), // [12,34,…]
    head.map((x, i) => `"${i}":${x}`).join(",") // {"0":12,"1":34,…}
  ]
}

const expectNoLeak = (output: string, secrets: ReadonlyArray<string>) => {
  const squeezed = output.replace(/\s+/g, "")
  for (const secret of secrets) {
    expect(output).not.toContain(secret)
    expect(squeezed).not.toContain(secret.replace(/\s+/g, ""))
  }
}

/** What each of Effect's loggers writes for `log`, collected as text. */
const loggedBy = <A, E>(log: Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const lines: Array<string> = []
    const collect = (...args: Array<unknown>) => {
      lines.push(args.map((a) => (typeof a === "string" ? a : inspect(a, { depth: Infinity }))).join(" "))
    }
    const consoleLog = vi.spyOn(console, "log").mockImplementation(collect)
    // The node's own formats (`alknet node --log-format`) write to stderr.
    const consoleError = vi.spyOn(console, "error").mockImplementation(collect)
    const capture = Logger.make((options) => {
      lines.push(Logger.logfmtLogger.log(options))
      lines.push(Logger.jsonLogger.log(options))
      lines.push(Logger.stringLogger.log(options))
      lines.push(JSON.stringify(Logger.structuredLogger.log(options)))
      Logger.prettyLogger({ colors: false }).log(options)
      Logs.json.log(options)
      Logs.pretty().log(options)
    })
    yield* log.pipe(Effect.provide(Logger.replace(Logger.defaultLogger, capture)))
    consoleLog.mockRestore()
    consoleError.mockRestore()
    expect(lines.length).toBeGreaterThanOrEqual(5)
    return lines.join("\n")
  })

/** Every way a value is commonly turned into text. */
const renderings = (value: unknown) => [
  JSON.stringify(value),
  JSON.stringify({ nested: [value] }),
  String(value),
  `${value}`,
  inspect(value),
  inspect(value, { depth: Infinity, showHidden: true, customInspect: true }),
  inspect({ nested: value }, { depth: Infinity })
]

/** A tracer that records every span: its name, attributes, events and exit. */
const recordingTracer = () => {
  const spans: Array<{ name: string; attributes: Map<string, unknown>; events: Array<unknown>; exit?: unknown }> = []
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind) => {
      const record: (typeof spans)[number] = { name, attributes: new Map(), events: [] }
      spans.push(record)
      return {
        _tag: "Span",
        name,
        spanId: `${spans.length}`,
        traceId: "test",
        parent,
        context,
        status: { _tag: "Started", startTime },
        attributes: record.attributes,
        links: [...links],
        sampled: true,
        kind,
        end: (_endTime, exit) => {
          record.exit = exit
        },
        attribute: (key, value) => {
          record.attributes.set(key, value)
        },
        event: (name, _startTime, attributes) => {
          record.events.push({ name, attributes })
        },
        addLinks: () => {}
      } satisfies Tracer.Span
    },
    context: (f) => f()
  })
  return { spans, tracer }
}

describe("redaction", () => {
  it.scoped("a DerivedKey's private key never shows: JSON, String, inspect, Effect's loggers", () =>
    Effect.gen(function*() {
      const vault = yield* Vault.make()
      yield* vault.unlock(Redacted.make(ABOUT))
      for (const key of [yield* vault.deriveEd25519(HdPath.nodeIdentity), yield* vault.deriveSecp256k1("m/44'/60'/0'/0/0")]) {
        const secrets = spellings(Redacted.value(key.privateKey))
        for (const text of renderings(key)) {
          expectNoLeak(text, secrets)
          expect(text).toContain("redacted")
        }
        // The public key is not secret and is shown, as hex.
        expect(JSON.stringify(key)).toContain(Buffer.from(key.publicKey).toString("hex"))
        expectNoLeak(
          yield* loggedBy(
            Effect.log("derived", key).pipe(Effect.annotateLogs("key", key), Effect.annotateLogs("raw", key.privateKey))
          ),
          secrets
        )
      }
    }))

  it.scoped("the mnemonic from unlockNew never shows", () =>
    Effect.gen(function*() {
      const vault = yield* Vault.make()
      const mnemonic = yield* vault.unlockNew(24)
      const words = Redacted.value(mnemonic).split(" ")
      const secrets = [words.slice(0, 3).join(" "), words.slice(-3).join(" ")]
      for (const text of renderings(mnemonic)) expectNoLeak(text, secrets)
      expectNoLeak(yield* loggedBy(Effect.log(mnemonic).pipe(Effect.annotateLogs("mnemonic", mnemonic))), secrets)
    }))

  it.scoped("the seed never shows, not even when inspecting the service", () =>
    Effect.gen(function*() {
      const vault = yield* Vault.make()
      yield* vault.unlock(Redacted.make(ABOUT))
      yield* vault.deriveEd25519(HdPath.nodeIdentity)
      const secrets = spellings(seedOf(ABOUT))
      for (const text of renderings(vault)) expectNoLeak(text, secrets)
      expectNoLeak(yield* loggedBy(Effect.log(vault)), secrets)
    }))

  it.scoped("errors never quote the mnemonic, through message, String, JSON, inspect or Cause.pretty", () =>
    Effect.gen(function*() {
      const vault = yield* Vault.make()
      const words = ABOUT.split(" ")
      words[4] = "swordfishy"
      const attempts = [words.join(" "), ABOUT.replace(/about$/, "zoo"), `${ABOUT} about`]
      for (const mnemonic of attempts) {
        const exit = yield* Effect.exit(vault.unlock(Redacted.make(mnemonic)))
        expect(exit._tag).toBe("Failure")
        if (exit._tag !== "Failure") continue
        const error = Either.getOrThrow(Either.fromOption(Cause.failureOption(exit.cause), () => "no failure"))
        const texts = [error.message, String(error), JSON.stringify(error), inspect(error), Cause.pretty(exit.cause)]
        for (const text of texts) {
          expect(text).not.toContain("swordfishy")
          expect(text).not.toContain("abandon abandon")
        }
        expectNoLeak(yield* loggedBy(Effect.logError(exit.cause)), ["swordfishy", "abandon abandon"])
      }
    }))

  it.scoped("decrypted plaintext comes back Redacted and stays hidden", () =>
    Effect.gen(function*() {
      const vault = yield* Vault.make()
      yield* vault.unlock(Redacted.make(ABOUT))
      const plaintext = yield* vault.decrypt(yield* vault.encrypt("sk-live-topsecret"))
      for (const text of renderings(plaintext)) expectNoLeak(text, ["sk-live-topsecret"])
      expectNoLeak(yield* loggedBy(Effect.log(plaintext)), ["sk-live-topsecret"])
    }))

  it.scoped("every method runs in its Vault.* span, and no span carries a secret", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      const vault = yield* Vault.make()
      const secrets = yield* Effect.gen(function*() {
        const mnemonic = yield* vault.unlockNew(12)
        yield* vault.lock
        yield* vault.unlock(mnemonic)
        yield* vault.isUnlocked
        const key = yield* vault.deriveEd25519(HdPath.nodeIdentity)
        const eth = yield* vault.deriveSecp256k1("m/44'/60'/0'/0/0")
        const blob = yield* vault.encrypt("sk-live-topsecret")
        yield* vault.decrypt(blob)
        yield* vault.rotate(blob, 3)
        yield* Effect.flip(vault.unlock(Redacted.make(ABOUT)))
        return [
          Redacted.value(mnemonic).split(" ").slice(0, 3).join(" "),
          ...spellings(Redacted.value(key.privateKey)),
          ...spellings(Redacted.value(eth.privateKey)),
          "sk-live-topsecret"
        ]
      }).pipe(Effect.withTracer(tracer))
      expect(new Set(spans.map((span) => span.name))).toEqual(
        new Set([
          "Vault.unlockNew",
          "Vault.lock",
          "Vault.unlock",
          "Vault.isUnlocked",
          "Vault.deriveEd25519",
          "Vault.deriveSecp256k1",
          "Vault.encrypt",
          "Vault.decrypt",
          "Vault.rotate"
        ])
      )
      expect(spans.every((span) => span.exit !== undefined)).toBe(true) // every span ended
      expectNoLeak(inspect(spans, { depth: Infinity, showHidden: true }), secrets)
      expectNoLeak(JSON.stringify(spans.map((span) => ({ ...span, attributes: [...span.attributes] }))), secrets)
    }))
})
