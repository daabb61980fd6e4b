/**
 * Property-based tests (fast-check) of the frame codec and envelope decoding (issue #19 item 6): arbitrary chunkings
 * of valid frame sequences decode to the same envelopes; arbitrary mutations and arbitrary bytes yield envelopes or a
 * `CodecError`, never another exception, never a hang. Run counts are bounded for a 2-core CI box; a failure prints
 * its seed and shrunk counterexample (`fc.assert`).
 */
import { describe, expect, it } from "@effect/vitest"
import { Either, Schema } from "effect"
import fc from "fast-check"
import * as Codec from "../../src/call/Codec.js"
import * as Envelope from "../../src/schema/Envelope.js"
import * as Json from "../../src/schema/Json.js"
import type { EventEnvelope } from "../../src/schema/Envelope.js"

const RUNS = { numRuns: 200 }

/** Strings of any UTF-16 code units, lone surrogates included (JSON escapes them). */
const anyString = fc.string({ unit: "binary", maxLength: 40 })
const json = fc.jsonValue({ maxDepth: 4 })
/** Nesting far past what recursion survives, as `JSON.parse` happily builds it (for checks that never print it). */
const deepJson = fc.integer({ min: 100, max: 20_000 }).map((n) => JSON.parse("[".repeat(n) + "]".repeat(n)) as unknown)

const envelope: fc.Arbitrary<EventEnvelope> = fc.record({
  type: fc.oneof(fc.constantFrom(...Envelope.EventType.literals), anyString),
  id: fc.oneof(fc.uuid(), anyString, fc.string({ minLength: 1_000, maxLength: 5_000 })),
  payload: fc.oneof(
    fc.dictionary(anyString, json, { maxKeys: 5 }),
    fc.record({ operationId: anyString, input: json })
  )
})

/**
 * A frame to send: a valid envelope, or a `call.requested` whose input nests `depth` arrays — built as text, since no
 * recursive function (JSON.stringify, toEqual, fast-check's reporter) survives such a value.
 */
type Item = { readonly envelope: EventEnvelope } | { readonly id: string; readonly depth: number }
const item: fc.Arbitrary<Item> = fc.oneof(
  { weight: 4, arbitrary: envelope.map((e) => ({ envelope: e })) },
  { weight: 1, arbitrary: fc.record({ id: fc.uuid(), depth: fc.integer({ min: 100, max: 20_000 }) }) }
)
const deepText = (id: string, depth: number) =>
  `{"type":"call.requested","id":"${id}","payload":{"operationId":"/demo/echo","input":${"[".repeat(depth)}${
    "]".repeat(depth)
  }}}`
const frameOf = (i: Item): Uint8Array => "envelope" in i ? Codec.encodeFrame(i.envelope) : frameText(deepText(i.id, i.depth))
const frameText = (text: string) => {
  const body = new TextEncoder().encode(text)
  const out = new Uint8Array(4 + body.length)
  new DataView(out.buffer).setUint32(0, body.length)
  out.set(body, 4)
  return out
}
/** The decoded envelope is the item: equal for a plain one; for a deep one, its id and exactly its depth. */
const expectDecoded = (got: EventEnvelope | undefined, i: Item) => {
  if ("envelope" in i) return expect(got).toEqual(viaJson(i.envelope))
  expect(got?.id).toBe(i.id)
  const input = got?.payload.input
  expect(Json.exceedsDepth(input, i.depth - 1) && !Json.exceedsDepth(input, i.depth)).toBe(true)
}

/** What a receiver must see: the envelope as JSON carries it. */
const viaJson = (e: unknown) => JSON.parse(JSON.stringify(e)) as unknown

/** Split `bytes` at the given cut points (taken modulo its length). */
const chunk = (bytes: Uint8Array, cuts: ReadonlyArray<number>): Array<Uint8Array> => {
  const points = [...new Set(cuts.map((c) => bytes.length === 0 ? 0 : c % bytes.length))].sort((a, b) => a - b)
  const out: Array<Uint8Array> = []
  let from = 0
  for (const p of [...points, bytes.length]) {
    out.push(bytes.subarray(from, p))
    from = p
  }
  return out
}

/** Run `f`; a thrown `CodecError` is returned, anything else thrown fails the property. */
const codecErrorOr = <A>(f: () => A): A | Codec.CodecError => {
  try {
    return f()
  } catch (e) {
    if (e instanceof Codec.CodecError) return e
    throw e
  }
}

const isEnvelope = (u: unknown): boolean =>
  typeof u === "object" && u !== null && typeof (u as EventEnvelope).type === "string" &&
  typeof (u as EventEnvelope).id === "string" && typeof (u as EventEnvelope).payload === "object" &&
  (u as EventEnvelope).payload !== null && !Array.isArray((u as EventEnvelope).payload)

describe("frame codec (property-based)", () => {
  it("any chunking of a valid frame sequence decodes to the same envelopes, nothing left over", () => {
    fc.assert(
      fc.property(fc.array(item, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 30 }), (items, cuts) => {
        const bytes = Buffer.concat(items.map(frameOf))
        const decoder = new Codec.FrameDecoder()
        const out: Array<EventEnvelope> = []
        for (const piece of chunk(bytes, cuts)) out.push(...decoder.push(piece))
        expect(out.length).toBe(items.length)
        items.forEach((i, k) => expectDecoded(out[k], i))
        expect(decoder.pendingBytes).toBe(0)
        decoder.end()
      }),
      RUNS
    )
  })

  it("one byte at a time, too", () => {
    fc.assert(
      fc.property(fc.array(envelope, { minLength: 1, maxLength: 3 }), (envs) => {
        const small = envs.filter((e) => JSON.stringify(e).length < 20_000)
        const bytes = Buffer.concat(small.map((e) => Codec.encodeFrame(e)))
        const decoder = new Codec.FrameDecoder()
        const out: Array<EventEnvelope> = []
        for (let i = 0; i < bytes.length; i++) out.push(...decoder.push(bytes.subarray(i, i + 1)))
        expect(out).toEqual(small.map(viaJson))
      }),
      { numRuns: 50 }
    )
  })

  it("arbitrary mutations of valid frames yield envelopes or a CodecError, nothing else, and end", () => {
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant("set" as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant("delete" as const), at: fc.nat(), byte: fc.constant(0) }),
      fc.record({ kind: fc.constant("truncate" as const), at: fc.nat(), byte: fc.constant(0) })
    )
    fc.assert(
      fc.property(
        fc.array(item, { minLength: 1, maxLength: 4 }),
        fc.array(mutation, { minLength: 1, maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        fc.integer({ min: 16, max: 1 << 20 }),
        (items, mutations, cuts, maxFrameBytes) => {
          const bytes = [...Buffer.concat(items.map(frameOf))]
          for (const m of mutations) {
            const at = bytes.length === 0 ? 0 : m.at % bytes.length
            if (m.kind === "set") bytes[at] = m.byte
            else if (m.kind === "insert") bytes.splice(at, 0, m.byte)
            else if (m.kind === "delete") bytes.splice(at, 1)
            else bytes.length = at
          }
          const decoder = new Codec.FrameDecoder(maxFrameBytes)
          for (const piece of chunk(Uint8Array.from(bytes), cuts)) {
            const got = codecErrorOr(() => decoder.push(piece))
            if (got instanceof Codec.CodecError) return // the stream is reset; the decoder is discarded
            for (const e of got) expect(isEnvelope(e)).toBe(true)
          }
          const end = codecErrorOr(() => decoder.end())
          if (end instanceof Codec.CodecError) expect(end.reason).toBe("Truncated")
        }
      ),
      RUNS
    )
  })

  it("arbitrary bytes as a message (WebSocket) or a frame body: an envelope or a CodecError", () => {
    const bodies = fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      anyString.map((s) => new TextEncoder().encode(s)),
      json.map((j) => new TextEncoder().encode(JSON.stringify(j))),
      envelope.map((e) => Codec.encodeEnvelope(e)),
      fc.record({ id: fc.uuid(), depth: fc.integer({ min: 100, max: 20_000 }) }).map((d) =>
        new TextEncoder().encode(deepText(d.id, d.depth))
      )
    )
    fc.assert(
      fc.property(bodies, (body) => {
        const decoded = codecErrorOr(() => Codec.decodeEnvelope(body))
        if (!(decoded instanceof Codec.CodecError)) expect(isEnvelope(decoded)).toBe(true)
        const framed = new Uint8Array(4 + body.length)
        new DataView(framed.buffer).setUint32(0, body.length)
        framed.set(body, 4)
        const viaFrame = codecErrorOr(() => new Codec.FrameDecoder().push(framed))
        if (decoded instanceof Codec.CodecError) {
          expect(viaFrame instanceof Codec.CodecError && viaFrame.reason).toBe(body.length === 0 ? "EmptyFrame" : decoded.reason)
        } else if (Json.exceedsDepth(decoded, 100)) {
          // too deep for toEqual: the same frame, by its id and type
          expect(Array.isArray(viaFrame) && viaFrame.map((e) => [e.type, e.id])).toEqual([[decoded.type, decoded.id]])
        } else {
          expect(viaFrame).toEqual([decoded])
        }
      }),
      { numRuns: 500 }
    )
  })

  it("arbitrary length headers: zero and over the maximum are rejected before any body arrives", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 1, max: 1 << 26 }), (length, max) => {
        const header = new Uint8Array(4)
        new DataView(header.buffer).setUint32(0, length)
        const got = codecErrorOr(() => new Codec.FrameDecoder(max).push(header))
        if (length === 0) expect(got instanceof Codec.CodecError && got.reason).toBe("EmptyFrame")
        else if (length > max) expect(got instanceof Codec.CodecError && got.reason).toBe("FrameTooLarge")
        else expect(got).toEqual([])
      }),
      { numRuns: 500 }
    )
  })
})

describe("envelope decoding (property-based)", () => {
  const value = fc.oneof(json, deepJson, fc.anything({ maxDepth: 3 }))
  const shaped = fc.record({ type: value, id: value, payload: value }, { requiredKeys: [] })

  it("the codec's hand-written check accepts exactly what the EventEnvelope schema accepts", () => {
    const isSchemaEnvelope = Schema.is(Envelope.EventEnvelope)
    fc.assert(
      fc.property(fc.oneof(value, shaped, envelope), (u) => {
        const checked = codecErrorOr(() => Codec.checkEnvelope(u))
        expect(checked instanceof Codec.CodecError ? false : true).toBe(isSchemaEnvelope(u))
        if (checked instanceof Codec.CodecError) expect(checked.reason).toBe("InvalidEnvelope")
      }),
      { numRuns: 500 }
    )
  })

  it("payload schemas decode any JSON (deep included) to a value or a ParseError, never a throw", () => {
    const payload = fc.oneof(
      fc.dictionary(anyString, fc.oneof(json, deepJson), { maxKeys: 4 }),
      fc.record({
        operationId: fc.oneof(anyString, json, deepJson),
        input: fc.oneof(json, deepJson),
        auth_token: fc.oneof(anyString, json),
        forwarded_for: fc.oneof(json, deepJson, fc.record({ id: anyString, scopes: fc.oneof(json, deepJson), resources: fc.oneof(json, deepJson) })),
        timeout_ms: fc.oneof(fc.double(), fc.integer(), json)
      }, { requiredKeys: [] })
    )
    const schemas = [Envelope.CallRequested, Envelope.CallResponded, Envelope.CallErrorPayload, Envelope.CallAborted]
    fc.assert(
      fc.property(payload, (p) => {
        for (const schema of schemas) {
          const result = Schema.decodeUnknownEither(schema as Schema.Schema<unknown>)(p)
          expect(Either.isLeft(result) || Either.isRight(result)).toBe(true)
        }
      }),
      { numRuns: 300 }
    )
  })
})
