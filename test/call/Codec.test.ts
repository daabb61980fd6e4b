import { describe, expect, it } from "@effect/vitest"
import * as Codec from "../../src/call/Codec.js"
import type { EventEnvelope } from "../../src/schema/Envelope.js"

const envelope = (id: string, payload: Record<string, unknown> = {}): EventEnvelope => ({
  type: "call.requested",
  id,
  payload: { operationId: "/fs/readFile", input: null, ...payload }
})

/** A raw frame: 4-byte big-endian length of `body`, then `body`. */
const frame = (body: Uint8Array | string): Uint8Array => {
  const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body
  const out = new Uint8Array(4 + bytes.length)
  new DataView(out.buffer).setUint32(0, bytes.length)
  out.set(bytes, 4)
  return out
}

const codecError = (f: () => unknown) => {
  try {
    f()
  } catch (e) {
    if (e instanceof Codec.CodecError) return e
    throw e
  }
  throw new Error("expected a CodecError")
}

describe("frame codec", () => {
  it("encodes a 4-byte big-endian length followed by UTF-8 JSON", () => {
    const env = envelope("a", { input: { text: "héllo ✓" } })
    const bytes = Codec.encodeFrame(env)
    const json = JSON.stringify(env)
    const length = new TextEncoder().encode(json).length
    expect([...bytes.subarray(0, 4)]).toEqual([(length >>> 24) & 255, (length >>> 16) & 255, (length >>> 8) & 255, length & 255])
    expect(new TextDecoder().decode(bytes.subarray(4))).toBe(json)
    expect(bytes.length).toBe(4 + length)
  })

  it("decodes the exact bytes of a reference frame", () => {
    const body = `{"type":"call.error","id":"x","payload":{"code":"NOT_FOUND","message":"operation not found: a/b","retryable":false}}`
    const decoder = new Codec.FrameDecoder()
    expect(decoder.push(frame(body))).toEqual([JSON.parse(body)])
  })

  it("decodes a frame split across 1-byte chunks", () => {
    const env = envelope("split", { input: { text: "ünïcødé across chunk boundaries" } })
    const bytes = Codec.encodeFrame(env)
    const decoder = new Codec.FrameDecoder()
    const out: Array<EventEnvelope> = []
    for (let i = 0; i < bytes.length; i++) {
      const got = decoder.push(bytes.subarray(i, i + 1))
      if (i < bytes.length - 1) expect(got).toEqual([])
      out.push(...got)
    }
    expect(out).toEqual([env])
    expect(decoder.pendingBytes).toBe(0)
    decoder.end()
  })

  it("decodes many frames from one chunk, and frames straddling chunk boundaries", () => {
    const envs = Array.from({ length: 50 }, (_, i) => envelope(`id-${i}`, { input: { i } }))
    const all = Buffer.concat(envs.map((e) => Codec.encodeFrame(e)))
    expect(new Codec.FrameDecoder().push(all)).toEqual(envs)
    for (const size of [3, 7, 64, 1000]) {
      const decoder = new Codec.FrameDecoder()
      const out: Array<EventEnvelope> = []
      for (let i = 0; i < all.length; i += size) out.push(...decoder.push(all.subarray(i, i + size)))
      expect(out).toEqual(envs)
    }
  })

  it("encodes many envelopes as the same bytes as their frames one after another, multi-byte UTF-8 included", () => {
    const envs = [envelope("a"), envelope("ü-€-𝄞", { input: { text: "naïve ☃" } }), envelope("c", { input: [1, 2, 3] })]
    const one = Codec.encodeFrames(envs)
    expect(Buffer.from(one).equals(Buffer.concat(envs.map((e) => Codec.encodeFrame(e))))).toBe(true)
    expect(new Codec.FrameDecoder().push(one)).toEqual(envs)
    // one envelope over the maximum: the whole write is refused
    expect(codecError(() => Codec.encodeFrames([envelope("a"), envelope("b", { input: "x".repeat(100) })], 90)).reason)
      .toBe("FrameTooLarge")
  })

  it("rejects a zero length", () => {
    expect(codecError(() => new Codec.FrameDecoder().push(new Uint8Array([0, 0, 0, 0]))).reason).toBe("EmptyFrame")
  })

  it("rejects a length over the maximum before reading the body (default 64 MiB, configurable)", () => {
    const over = new Uint8Array(4)
    new DataView(over.buffer).setUint32(0, Codec.DEFAULT_MAX_FRAME_BYTES + 1)
    expect(codecError(() => new Codec.FrameDecoder().push(over)).reason).toBe("FrameTooLarge")
    const exactly = new Uint8Array(4)
    new DataView(exactly.buffer).setUint32(0, Codec.DEFAULT_MAX_FRAME_BYTES)
    expect(new Codec.FrameDecoder().push(exactly)).toEqual([]) // waits for the body
    const small = new Codec.FrameDecoder(10)
    expect(codecError(() => small.push(frame(`{"type":"a","id":"b","payload":{}}`))).reason).toBe("FrameTooLarge")
    expect(codecError(() => Codec.encodeFrame(envelope("x"), 10)).reason).toBe("FrameTooLarge")
  })

  it("rejects bad UTF-8", () => {
    const body = new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]) // {"\xff\xfe"}
    expect(codecError(() => new Codec.FrameDecoder().push(frame(body))).reason).toBe("InvalidUtf8")
  })

  it("rejects bad JSON", () => {
    expect(codecError(() => new Codec.FrameDecoder().push(frame(`{"type":`))).reason).toBe("InvalidJson")
  })

  it("rejects the wrong envelope shape and says which field", () => {
    const cases: Array<[string, string]> = [
      [`[1,2]`, "object"],
      [`null`, "object"],
      [`{"id":"a","payload":{}}`, "type"],
      [`{"type":"call.requested","id":7,"payload":{}}`, "id"],
      [`{"type":"call.requested","id":"a","payload":[]}`, "payload"],
      [`{"type":"call.requested","id":"a"}`, "payload"]
    ]
    for (const [body, field] of cases) {
      const error = codecError(() => new Codec.FrameDecoder().push(frame(body)))
      expect(error.reason).toBe("InvalidEnvelope")
      expect(error.message).toContain(field)
    }
  })

  it("reports a stream that ends inside a frame", () => {
    const bytes = Codec.encodeFrame(envelope("t"))
    const inHeader = new Codec.FrameDecoder()
    inHeader.push(bytes.subarray(0, 2))
    expect(codecError(() => inHeader.end()).reason).toBe("Truncated")
    const inBody = new Codec.FrameDecoder()
    inBody.push(bytes.subarray(0, 10))
    expect(codecError(() => inBody.end()).reason).toBe("Truncated")
    const whole = new Codec.FrameDecoder()
    whole.push(bytes)
    expect(() => whole.end()).not.toThrow()
  })

  it("refuses to encode what is not JSON", () => {
    expect(codecError(() => Codec.encodeFrame(envelope("b", { input: 10n }))).reason).toBe("Unserializable")
  })

  it("encodes and decodes single envelopes without a length prefix (WebSocket messages)", () => {
    const env = envelope("ws", { input: [1, "two"] })
    expect(Codec.decodeEnvelope(Codec.encodeEnvelope(env))).toEqual(env)
    expect(codecError(() => Codec.decodeEnvelope(new TextEncoder().encode("nope"))).reason).toBe("InvalidJson")
  })
})
