/**
 * Wire fuzz (issue #19 item 6): a node listening on QUIC and on WebSocket (127.0.0.1, port 0) takes a few thousand
 * hostile frames and messages — garbage, bad lengths, truncated frames, bad UTF-8, JSON that is not an envelope, wrong
 * field types, huge ids and names, deep JSON — from raw clients (the `ws` package, raw @matrixai/quic streams), while
 * well-behaved clients on their own connections keep calling it. Every good call must succeed, every hostile request
 * that is a well-formed envelope must get an answer (deep input: `INVALID_INPUT`, with a bounded message), every
 * invalid frame may cost its sender only that stream (QUIC) or socket (WebSocket), and the node serves afterwards.
 *
 * Only public surfaces: the Node layer, CallClient, and raw sockets. The hostile traffic is generated from a fixed
 * fast-check seed, so a failure replays. Nothing waits for wall-clock time: each step waits for an answer, a close or
 * a reset.
 */
import { describe, expect, it } from "@effect/vitest"
import QuicLogger, { LogLevel as QuicLogLevel } from "@matrixai/logger"
import { QUICClient } from "@matrixai/quic"
import { Effect, Fiber, Layer, Logger, LogLevel, Queue, Ref, Redacted, Schema, Stream } from "effect"
import fc from "fast-check"
import { randomBytes } from "node:crypto"
import { WebSocket as RawWebSocket } from "ws"
import { CALL_PATH } from "../../src/layers/ws/WebSocket.js"
import * as Node from "../../src/layers/Node.js"
import * as CallClient from "../../src/layers/Client.js"
import * as Operation from "../../src/services/Operation.js"
import * as Tls from "../../src/services/Tls.js"

const MNEMONIC = Redacted.make(
  "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
)
const ALPN = "alknet/call"

/** ERROR lines the node logs: hostile input is the caller's fault, never an error (or a defect) of the node. */
const errorsLogged: Array<string> = []
const captureErrors = Logger.replace(
  Logger.defaultLogger,
  Logger.make(({ logLevel, message }) => {
    if (LogLevel.greaterThanEqual(logLevel, LogLevel.Error)) errorsLogged.push(String(message).slice(0, 300))
  })
)
const SEED = 19_20
/** 2,250 hostile frames and messages by default (~20 s of CPU); `FUZZ_SCALE=4` fuzzes harder, locally. */
const SCALE = Number(process.env.FUZZ_SCALE ?? "1")
/** Requests a raw client keeps in flight on one socket or connection. */
const WINDOW = 8

const operations = [
  Operation.query({ name: "fuzz/echo", input: Schema.Unknown, output: Schema.Unknown, handler: Effect.succeed }),
  Operation.mutation({
    name: "fuzz/typed",
    input: Schema.Struct({ ms: Schema.Number, tags: Schema.optional(Schema.Array(Schema.String)) }),
    output: Schema.Number,
    handler: ({ ms }) => Effect.succeed(ms)
  }),
  Operation.subscription({
    name: "fuzz/count",
    input: Schema.Struct({ n: Schema.Int.pipe(Schema.between(0, 3)) }),
    output: Schema.Number,
    handler: ({ n }) => Stream.range(1, n).pipe(Stream.take(n))
  })
]

// ---------------------------------------------------------------------------------------------------------------
// Hostile traffic

/** A `call.requested` (or other envelope) that is well-formed JSON: the node must answer it (`answer`) or may ignore it. */
interface Envelope {
  readonly id: string
  readonly text: string
  /** What the answer must be: a `call.error` with this code (and message), or any answer at all. */
  readonly answer?: { readonly code?: string; readonly message?: string } | undefined
}
/** Bytes that are not a valid envelope: they may cost their sender the stream / socket, nothing more. */
interface Invalid {
  readonly what: string
  /** The WebSocket message (a string is sent as a text message). */
  readonly message: Uint8Array | string
  /** The QUIC stream bytes: a frame around `message`, or a hand-made bad frame. */
  readonly frame: Uint8Array
}

const utf8 = (s: string) => new TextEncoder().encode(s)
const frame = (body: Uint8Array, length = body.length) => {
  const out = new Uint8Array(4 + body.length)
  new DataView(out.buffer).setUint32(0, length)
  out.set(body, 4)
  return out
}
const nested = (depth: number, shape: "array" | "object") =>
  shape === "array" ? "[".repeat(depth) + "]".repeat(depth) : "{\"a\":".repeat(depth) + "0" + "}".repeat(depth)
const str = (s: string) => JSON.stringify(s)

const anyString = fc.string({ unit: "binary", maxLength: 20 })
const jsonText = fc.jsonValue({ maxDepth: 3 }).map((j) => JSON.stringify(j))
/** Mostly just past the limit, sometimes 100,000 levels (~200 KB: the size that overflowed every recursive step). */
const deep = fc.record({
  depth: fc.oneof({ weight: 19, arbitrary: fc.integer({ min: 65, max: 2_000 }) }, { weight: 1, arbitrary: fc.constant(100_000) }),
  shape: fc.constantFrom("array" as const, "object" as const)
}).map(({ depth, shape }) => nested(depth, shape))

/** Hostile requests the node must answer; `n` makes each id unique (a duplicate id in flight is another matter). */
const hostileRequest = (n: number): fc.Arbitrary<Envelope> => {
  const id = fc.oneof(
    { weight: 9, arbitrary: fc.constant(`h-${n}`) },
    { weight: 1, arbitrary: fc.integer({ min: 1_000, max: 20_000 }).map((size) => `h-${n}-${"x".repeat(size)}`) }
  )
  const request = (id: string, payload: string) => `{"type":"call.requested","id":${str(id)},"payload":${payload}}`
  return fc.oneof(
    // deep input, to every kind of operation: INVALID_INPUT before any schema sees it
    fc.tuple(id, fc.constantFrom("/fuzz/echo", "fuzz/typed", "/fuzz/count", "/services/schema"), deep).map((
      [id, op, input]
    ) => ({
      id,
      text: request(id, `{"operationId":${str(op)},"input":${input}}`),
      answer: { code: "INVALID_INPUT", message: "input is nested deeper than 64 levels" }
    })),
    // deep input one level inside a field
    fc.tuple(id, deep).map(([id, input]) => ({
      id,
      text: request(id, `{"operationId":"/fuzz/typed","input":{"ms":${input}}}`),
      answer: { code: "INVALID_INPUT", message: "input is nested deeper than 64 levels" }
    })),
    // unknown operations, some huge
    fc.tuple(id, fc.oneof(anyString, fc.integer({ min: 300, max: 20_000 }).map((k) => "y".repeat(k)))).map((
      [id, op]
    ) => ({
      id,
      text: request(id, `{"operationId":${str(`nope/${op}`)},"input":null}`),
      answer: { code: "NOT_FOUND" }
    })),
    // wrong input types, and huge values the error must not repeat in full
    fc.tuple(id, fc.oneof(jsonText, fc.integer({ min: 1_000, max: 20_000 }).map((k) => str("9".repeat(k))))).map((
      [id, ms]
    ) => ({ id, text: request(id, `{"operationId":"/fuzz/typed","input":{"ms":${ms}}}`), answer: {} })),
    // odd fields: operationId not a string, odd timeouts, tokens and forwarded_for of the wrong type or deep
    fc.tuple(
      id,
      fc.oneof(jsonText, deep, fc.constant(str("/fuzz/echo"))),
      fc.oneof(jsonText, deep, fc.constantFrom("-1", "1e308", "0.5", "\"10\"")),
      fc.oneof(jsonText.filter((t) => !t.startsWith("\"")), deep),
      fc.oneof(jsonText, deep)
    ).map(([id, op, timeout, token, forwarded]) => ({
      id,
      text: request(
        id,
        `{"operationId":${op},"input":{"ok":1},"timeout_ms":${timeout},"auth_token":${token},"forwarded_for":${forwarded}}`
      ),
      answer: {}
    })),
    // junk keys, __proto__, a missing input, a subscription with bad and good inputs
    fc.tuple(id, fc.dictionary(anyString, jsonText.map((t) => JSON.parse(t) as unknown), { maxKeys: 4 })).map((
      [id, junk]
    ) => ({
      id,
      text: request(id, JSON.stringify({ ...junk, operationId: "/fuzz/echo" }).slice(0, -1) + ",\"__proto__\":{\"x\":1}}"),
      answer: {}
    })),
    fc.tuple(id, fc.oneof(jsonText, fc.constantFrom("{\"n\":2}", "{\"n\":99}", "null"))).map(([id, input]) => ({
      id,
      text: request(id, `{"operationId":"/fuzz/count","input":${input}}`),
      answer: {}
    }))
  )
}

/** Well-formed envelopes a node may ignore: unknown types, answers nobody asked for, aborts of unknown calls. */
const strayEnvelope: fc.Arbitrary<Envelope> = fc.tuple(
  fc.oneof(fc.constantFrom("call.aborted", "call.responded", "call.completed", "call.error"), anyString),
  fc.oneof(anyString, fc.constant("x".repeat(20_000))),
  fc.oneof(fc.constant("{}"), fc.constant("{\"output\":1}"), fc.constant(`{"output":${nested(5_000, "array")}}`))
).map(([type, id, payload]) => ({ id, text: `{"type":${str(type)},"id":${str(id)},"payload":${payload}}` }))

const invalid: fc.Arbitrary<Invalid> = fc.oneof(
  fc.uint8Array({ minLength: 1, maxLength: 200 }).map((b) => ({ what: "garbage", message: b, frame: frame(b) })),
  fc.tuple(jsonText, fc.uint8Array({ minLength: 1, maxLength: 4 })).map(([t, bad]) => {
    const b = new Uint8Array([...utf8(t.slice(0, 2)), 0xff, ...bad, ...utf8(t.slice(2))])
    return { what: "bad UTF-8", message: b, frame: frame(b) }
  }),
  jsonText.filter((t) => !t.startsWith("{")).map((t) => ({ what: "not an object", message: utf8(t), frame: frame(utf8(t)) })),
  fc.tuple(jsonText, jsonText, jsonText).map(([type, id, payload]) => {
    const b = utf8(`{"type":${type},"id":${id},"payload":${payload}}`)
    return { what: "fields of the wrong type", message: b, frame: frame(b) }
  }).filter((i) => {
    const e = JSON.parse(new TextDecoder().decode(i.message as Uint8Array)) as Record<string, unknown>
    return !(typeof e.type === "string" && typeof e.id === "string" && typeof e.payload === "object" &&
      e.payload !== null && !Array.isArray(e.payload))
  }),
  fc.oneof(fc.integer({ min: 65, max: 2_000 }), fc.constant(100_000)).map((depth) => {
    const b = utf8(nested(depth, "array"))
    return { what: "a deep array for an envelope", message: b, frame: frame(b) }
  }),
  fc.constant({ what: "empty", message: new Uint8Array(0), frame: frame(new Uint8Array(0)) }),
  fc.tuple(fc.integer({ min: 64 * 1024 * 1024 + 1, max: 0xffffffff }), jsonText).map(([length, t]) => ({
    what: "a length over the maximum",
    message: utf8(`[${t}]`),
    frame: frame(utf8(t), length)
  })),
  fc.tuple(jsonText, fc.integer({ min: 1, max: 1_000 })).map(([t, missing]) => ({
    what: "a truncated frame",
    message: utf8(`[${t}]`),
    frame: frame(utf8(t), utf8(t).length + missing)
  })),
  fc.integer({ min: 1, max: 3 }).map((k) => ({
    what: "half a header",
    message: "text, not binary",
    frame: new Uint8Array(k).fill(1)
  }))
)

const sample = <A>(arbitrary: fc.Arbitrary<A>, numRuns: number, seed: number) => fc.sample(arbitrary, { seed, numRuns })
const requests = (count: number, seed: number) =>
  Array.from({ length: count }, (_, n) => sample(hostileRequest(n), 1, seed + n)[0]!)

// ---------------------------------------------------------------------------------------------------------------
// Raw clients

interface Answer {
  readonly type: string
  readonly id: string
  readonly payload: { readonly code?: string; readonly message?: string }
}

/** Check the answers to hostile requests: each one answered, with the expected code and a bounded message. */
const checkAnswers = (sent: ReadonlyArray<Envelope>, answers: Map<string, Answer>) => {
  for (const e of sent) {
    if (e.answer === undefined) continue
    const got = answers.get(e.id)
    if (got === undefined) expect.fail(`no answer to ${e.text.slice(0, 120)}`)
    if (e.answer.code !== undefined) {
      expect([got.type, got.payload.code]).toEqual(["call.error", e.answer.code])
    }
    if (e.answer.message !== undefined) expect(got.payload.message).toBe(e.answer.message)
    if (got.type === "call.error") expect(got.payload.message!.length).toBeLessThanOrEqual(1_100)
  }
}

const wsOptions = { rejectUnauthorized: false, maxPayload: 256 * 1024 * 1024 }

/** Open a raw WebSocket (a hostile peer does not verify the server). */
const openWs = (url: string) =>
  new Promise<RawWebSocket>((resolve, reject) => {
    const socket = new RawWebSocket(new URL(CALL_PATH, url), wsOptions)
    socket.once("open", () => resolve(socket))
    socket.once("error", reject)
  })

/**
 * Send requests on one socket, at most WINDOW awaiting an answer at a time (as a client within per-connection limits
 * would); resolves with the answers once every request that needs one has one.
 */
const wsRequests = async (
  url: string,
  sent: ReadonlyArray<Envelope>,
  onAnswer: () => void = () => undefined
): Promise<Map<string, Answer>> => {
  const socket = await openWs(url)
  const answers = new Map<string, Answer>()
  const waiting = new Set(sent.filter((e) => e.answer !== undefined).map((e) => e.id))
  let inFlight = 0
  let next = 0
  try {
    await new Promise<void>((resolve, reject) => {
      const sendMore = () => {
        while (next < sent.length && inFlight < WINDOW) {
          const e = sent[next++]!
          if (e.answer !== undefined) inFlight++
          socket.send(utf8(e.text))
        }
        if (next === sent.length && waiting.size === 0) resolve()
      }
      socket.on("message", (data: Buffer) => {
        const answer = JSON.parse(data.toString("utf8")) as Answer
        if (answers.has(answer.id)) return // more subscription items, or their end
        answers.set(answer.id, answer)
        if (waiting.delete(answer.id)) {
          inFlight--
          onAnswer()
        }
        sendMore()
      })
      socket.on("close", (code) => reject(new Error(`socket closed (${code}) with ${waiting.size} requests unanswered`)))
      sendMore()
    })
  } finally {
    socket.terminate()
  }
  return answers
}

/** Send one invalid message on a fresh socket and wait for the node to close it. */
const wsInvalid = async (url: string, item: Invalid): Promise<number> => {
  const socket = await openWs(url)
  return new Promise<number>((resolve) => {
    socket.on("close", (code) => resolve(code))
    socket.on("error", () => undefined)
    socket.send(item.message, { binary: typeof item.message !== "string" })
  })
}

/** Envelopes the node may ignore, then one good request on the same socket: the socket must still serve. */
const wsStrays = async (url: string, strays: ReadonlyArray<Envelope>, id: string) => {
  const good: Envelope = { id, text: `{"type":"call.requested","id":"${id}","payload":{"operationId":"/fuzz/echo","input":7}}`, answer: {} }
  const answers = await wsRequests(url, [...strays, good])
  expect(answers.get(id)?.type).toBe("call.responded")
}

const quicLogger = new QuicLogger("fuzz/quic", QuicLogLevel.SILENT)

/** A raw QUIC connection speaking `alknet/call`, with a throwaway client certificate. */
const openQuic = async (port: number, credentials: Tls.TlsCredentials) =>
  QUICClient.createQUICClient({
    host: "127.0.0.1",
    port,
    localHost: "127.0.0.1",
    crypto: { ops: { randomBytes: async (data: ArrayBuffer) => void randomBytes(data.byteLength).copy(Buffer.from(data)) } },
    config: {
      key: Redacted.value(credentials.privateKeyPem),
      cert: credentials.certificatePem,
      verifyPeer: false,
      applicationProtos: [ALPN]
    },
    logger: quicLogger
  })

/** Write `bytes` on a new stream, finish it, and read until the node ends or resets the stream. */
const quicExchange = async (client: QUICClient, bytes: Uint8Array): Promise<{ data: Buffer; reset: boolean }> => {
  const stream = client.connection.newStream("bidi")
  const writer = stream.writable.getWriter()
  const written = writer.write(bytes).then(() => writer.close()).catch(() => undefined) // a reset may cut the write
  const reader = stream.readable.getReader()
  const chunks: Array<Uint8Array> = []
  let reset = false
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      chunks.push(value)
    }
  } catch {
    reset = true
  }
  await written
  return { data: Buffer.concat(chunks), reset }
}

/** The envelopes in a byte string of frames. */
const framesIn = (data: Buffer): Array<Answer> => {
  const out: Array<Answer> = []
  for (let at = 0; at + 4 <= data.length;) {
    const length = data.readUInt32BE(at)
    out.push(JSON.parse(data.subarray(at + 4, at + 4 + length).toString("utf8")) as Answer)
    at += 4 + length
  }
  return out
}

/** Run `f` over `items` with at most `concurrency` at a time. */
const pool = async <A, B>(items: ReadonlyArray<A>, concurrency: number, f: (a: A, i: number) => Promise<B>) => {
  const out: Array<B> = new Array(items.length)
  let next = 0
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < items.length) {
      const i = next++
      out[i] = await f(items[i]!, i)
    }
  }))
  return out
}

const chunks = <A>(items: ReadonlyArray<A>, size: number): Array<Array<A>> =>
  Array.from({ length: Math.ceil(items.length / size) }, (_, i) => items.slice(i * size, (i + 1) * size))

// ---------------------------------------------------------------------------------------------------------------

describe("wire fuzz", () => {
  it.live("a node on QUIC and WebSocket survives thousands of hostile frames; interleaved good calls all succeed", () =>
    Effect.gen(function*() {
      const node = yield* Node.Node
      const quicAddress = node.transports.find((t) => t.kind === "quic")!.address
      const wsUrl = node.transports.find((t) => t.kind === "wss")!.address
      const quicPort = Number(new URL(quicAddress).port)
      const credentials = yield* Tls.load(Tls.RawKey(new Uint8Array(32).fill(7)))

      // Well-behaved clients, each on its own connection, calling all along: one call each time some hostile exchanges
      // have completed (paced by the hostile traffic, not by a clock).
      const good = yield* Ref.make(0)
      let done = false
      const ticks = [yield* Queue.sliding<void>(1), yield* Queue.sliding<void>(1)] as const
      let completed = 0
      const tick = () => {
        if (++completed % 10 === 0) for (const q of ticks) Queue.unsafeOffer(q, undefined)
      }
      const goodClient = (address: string, tag: string, ticked: Queue.Queue<void>) =>
        Effect.gen(function*() {
          const client = yield* CallClient.connect(address, { expectedFingerprint: node.fingerprint })
          let i = 0
          while (!done) {
            const input = { tag, i: i++, text: "ünïcødé ✓" }
            expect(yield* client.call("fuzz/echo", input)).toEqual(input)
            yield* Ref.update(good, (n) => n + 1)
            yield* Queue.take(ticked)
          }
        }).pipe(Effect.scoped)
      const goodFibers = yield* Effect.forEach(
        [goodClient(quicAddress, "quic", ticks[0]), goodClient(wsUrl, "ws", ticks[1])],
        Effect.fork
      )

      const hostile = yield* Effect.promise(async () => {
        const wsSent = requests(Math.round(900 * SCALE), SEED)
        const quicSent = requests(Math.round(600 * SCALE), SEED + 100_000)
        const wsBad = sample(invalid, Math.round(250 * SCALE), SEED + 1)
        const quicBad = sample(invalid, Math.round(300 * SCALE), SEED + 2)
        const strays = sample(strayEnvelope, Math.round(200 * SCALE), SEED + 3)

        const [wsAnswers, quicResults, wsCloses, quicBadResults] = await Promise.all([
          // WebSocket: hostile requests, 100 per socket, 3 sockets at a time
          pool(chunks(wsSent, 100), 3, (batch) => wsRequests(wsUrl, batch, tick)),
          // QUIC: hostile requests, one stream each, over 3 connections
          Promise.all(chunks(quicSent, 200).map(async (batch) => {
            const client = await openQuic(quicPort, credentials)
            try {
              return await pool(batch, WINDOW, (e) => quicExchange(client, frame(utf8(e.text))).finally(tick))
            } finally {
              await client.destroy({ force: true }).catch(() => undefined)
            }
          })),
          // WebSocket: each invalid message costs its sender the socket
          pool(wsBad, 4, (item) => wsInvalid(wsUrl, item).finally(tick)),
          // QUIC: each invalid frame costs its sender the stream, not the connection
          (async () => {
            const client = await openQuic(quicPort, credentials)
            try {
              const results = await pool(quicBad, WINDOW, (item) => quicExchange(client, item.frame).finally(tick))
              // the same connection still serves
              const after = await quicExchange(
                client,
                frame(utf8("{\"type\":\"call.requested\",\"id\":\"after\",\"payload\":{\"operationId\":\"/fuzz/echo\",\"input\":1}}"))
              )
              return { results, after: framesIn(after.data) }
            } finally {
              await client.destroy({ force: true }).catch(() => undefined)
            }
          })(),
          // stray envelopes, 50 per socket, each socket still serving afterwards
          pool(chunks(strays, 50), 2, (batch, i) => wsStrays(wsUrl, batch, `stray-check-${i}`))
        ])

        checkAnswers(wsSent, new Map(wsAnswers.flatMap((m) => [...m])))
        const quicAnswers = new Map<string, Answer>()
        for (const { data } of quicResults.flat()) for (const a of framesIn(data)) if (!quicAnswers.has(a.id)) quicAnswers.set(a.id, a)
        checkAnswers(quicSent, quicAnswers)
        // an invalid message closes its socket (1002 protocol error, 1009 too big), and nothing else
        for (const code of wsCloses) expect([1002, 1009]).toContain(code)
        // an invalid frame gets no answer; its stream is reset or ended
        for (const { data } of quicBadResults.results) expect(framesIn(data).filter((a) => a.type !== "call.error")).toEqual([])
        expect(quicBadResults.after.map((a) => [a.type, a.id])).toEqual([["call.responded", "after"]])
        return wsSent.length + quicSent.length + wsBad.length + quicBad.length + strays.length
      })

      done = true
      for (const q of ticks) yield* Queue.offer(q, undefined)
      yield* Fiber.joinAll(goodFibers)
      expect(hostile).toBeGreaterThanOrEqual(2_000 * SCALE)
      expect(yield* Ref.get(good)).toBeGreaterThan(0)
      expect(errorsLogged).toEqual([])

      // Still serving, on fresh connections over both transports.
      for (const address of [quicAddress, wsUrl]) {
        const client = yield* CallClient.connect(address, { expectedFingerprint: node.fingerprint })
        expect(yield* client.call("fuzz/typed", { ms: 5 })).toBe(5)
        expect(yield* client.call("fuzz/echo", JSON.parse(nested(64, "array")))).toEqual(JSON.parse(nested(64, "array")))
        const deep = yield* Effect.flip(client.call("fuzz/echo", JSON.parse(nested(65, "array"))))
        expect(deep.toPayload()).toEqual({
          code: "INVALID_INPUT",
          message: "input is nested deeper than 64 levels",
          retryable: false
        })
      }
    }).pipe(
      Effect.scoped,
      Effect.provide(Node.layerMemory({
        mnemonic: MNEMONIC,
        operations,
        webSocket: { host: "127.0.0.1", port: 0 },
        // the hostile clients all come from 127.0.0.1: let them in, so it is the frames that are tested
        config: { rate_limits: { max_connections_per_ip: 10_000, max_auth_attempts: 1_000_000 } }
      }).pipe(Layer.provide(captureErrors)))
    ), 180_000)
})
