/**
 * The frame codec of the call protocol (SPEC §4): a frame is a 4-byte big-endian unsigned length followed by that
 * many bytes of UTF-8 JSON holding one envelope. Length 0 or over the maximum (default 64 MiB) is invalid.
 *
 * Hot path: plain functions and a small class, no tracing, no Schema decode. The envelope shape is checked by hand
 * (`type` and `id` strings, `payload` a JSON object); payloads are validated by the engine per event type.
 * WebSocket transports use `encodeEnvelope` / `decodeEnvelope` (one envelope per message, no length prefix).
 */
import { Data } from "effect"
import type { EventEnvelope } from "../schema/Envelope.js"

/** The default (and largest) frame body: 64 MiB. */
export const DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024

export type CodecErrorReason =
  | "EmptyFrame"
  | "FrameTooLarge"
  | "InvalidUtf8"
  | "InvalidJson"
  | "InvalidEnvelope"
  | "Truncated"
  | "Unserializable"

export class CodecError extends Data.TaggedError("CodecError")<{
  readonly reason: CodecErrorReason
  readonly message: string
}> {}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

const isPlainObject = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

/** Check a parsed JSON value is an envelope. Throws `CodecError` (reason `InvalidEnvelope`). */
export const checkEnvelope = (u: unknown): EventEnvelope => {
  if (!isPlainObject(u)) throw new CodecError({ reason: "InvalidEnvelope", message: "envelope must be a JSON object" })
  if (typeof u.type !== "string") {
    throw new CodecError({ reason: "InvalidEnvelope", message: "envelope field \"type\" must be a string" })
  }
  if (typeof u.id !== "string") {
    throw new CodecError({ reason: "InvalidEnvelope", message: "envelope field \"id\" must be a string" })
  }
  if (!isPlainObject(u.payload)) {
    throw new CodecError({ reason: "InvalidEnvelope", message: "envelope field \"payload\" must be a JSON object" })
  }
  return u as unknown as EventEnvelope
}

/** Decode one envelope from UTF-8 JSON bytes (no length prefix). Throws `CodecError`. */
export const decodeEnvelope = (bytes: Uint8Array): EventEnvelope => {
  let text: string
  try {
    text = utf8.decode(bytes)
  } catch {
    throw new CodecError({ reason: "InvalidUtf8", message: "frame is not valid UTF-8" })
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    throw new CodecError({ reason: "InvalidJson", message: "frame is not valid JSON" })
  }
  return checkEnvelope(json)
}

/**
 * The JSON of an envelope. A `call.responded` (every subscription item) is written around its output, with the same
 * bytes `JSON.stringify` gives the whole envelope: only the output is serialized.
 */
const stringifyEnvelope = (envelope: EventEnvelope): string | undefined => {
  const payload = envelope.payload
  if (envelope.type === "call.responded" && onlyOutput(payload)) {
    const output = JSON.stringify(payload.output)
    if (output === undefined) return JSON.stringify(envelope)
    return respondedPrefix(envelope.id) + output + "}}"
  }
  return JSON.stringify(envelope)
}

/** Whether `payload` has exactly one key, `output` (without building the array of its keys). */
const onlyOutput = (payload: object): boolean => {
  let keys = 0
  for (const key in payload) {
    if (key !== "output") return false
    keys++
  }
  return keys === 1
}

/** The JSON of a `call.responded` up to its output; the last one is kept (a subscription's items share their id). */
let lastId: string | undefined
let lastPrefix = ""
const respondedPrefix = (id: string): string => {
  if (id !== lastId) {
    lastPrefix = `{"type":"call.responded","id":${JSON.stringify(id)},"payload":{"output":`
    lastId = id
  }
  return lastPrefix
}

const stringify = (envelope: EventEnvelope): string => {
  let json: string | undefined
  try {
    json = stringifyEnvelope(envelope)
  } catch (e) {
    throw new CodecError({ reason: "Unserializable", message: `envelope is not serializable to JSON: ${String(e)}` })
  }
  if (json === undefined) throw new CodecError({ reason: "Unserializable", message: "envelope is not JSON" })
  return json
}

/** Encode one envelope as UTF-8 JSON bytes (no length prefix). Throws `CodecError`. */
export const encodeEnvelope = (envelope: EventEnvelope, maxBytes: number = DEFAULT_MAX_FRAME_BYTES): Uint8Array => {
  const bytes = Buffer.from(stringify(envelope), "utf8")
  if (bytes.length > maxBytes) throw tooLarge(bytes.length, maxBytes)
  return bytes
}

const tooLarge = (length: number, max: number) =>
  new CodecError({ reason: "FrameTooLarge", message: `frame length ${length} exceeds the maximum of ${max} bytes` })

/** Encode one envelope as a frame: 4-byte big-endian length + UTF-8 JSON. Throws `CodecError`. */
export const encodeFrame = (envelope: EventEnvelope, maxBytes: number = DEFAULT_MAX_FRAME_BYTES): Uint8Array => {
  const json = stringify(envelope)
  const length = Buffer.byteLength(json, "utf8")
  if (length > maxBytes) throw tooLarge(length, maxBytes)
  const frame = Buffer.allocUnsafe(4 + length)
  frame.writeUInt32BE(length, 0)
  frame.write(json, 4, "utf8")
  return frame
}

/**
 * Encode envelopes as consecutive frames in one buffer (a chunk of subscription items as one transport write): one
 * allocation for all of them. Throws `CodecError` (then nothing is returned).
 */
export const encodeFrames = (envelopes: ReadonlyArray<EventEnvelope>, maxBytes: number = DEFAULT_MAX_FRAME_BYTES): Uint8Array => {
  if (envelopes.length === 1) return encodeFrame(envelopes[0]!, maxBytes)
  const texts: Array<string> = new Array(envelopes.length)
  const lengths: Array<number> = new Array(envelopes.length)
  let total = 0
  for (let i = 0; i < envelopes.length; i++) {
    const json = stringify(envelopes[i]!)
    const length = Buffer.byteLength(json, "utf8")
    if (length > maxBytes) throw tooLarge(length, maxBytes)
    texts[i] = json
    lengths[i] = length
    total += 4 + length
  }
  const out = Buffer.allocUnsafe(total)
  let offset = 0
  for (let i = 0; i < texts.length; i++) {
    out.writeUInt32BE(lengths[i]!, offset)
    offset += 4
    offset += out.write(texts[i]!, offset, "utf8")
  }
  return out
}

/**
 * Incremental frame decoder: feed it chunks at arbitrary boundaries (a frame split across 1-byte chunks, many frames
 * in one chunk) and it returns the complete envelopes. Chunks are kept as a list and joined only when a whole frame
 * is present, so many small chunks cost O(total bytes). After a `CodecError` the decoder must be discarded.
 */
export class FrameDecoder {
  private chunks: Array<Uint8Array> = []
  private buffered = 0
  /** The body length of the frame being read, or -1 while the 4-byte header is incomplete. */
  private expected = -1

  constructor(readonly maxFrameBytes: number = DEFAULT_MAX_FRAME_BYTES) {}

  /** Bytes received but not yet decoded. */
  get pendingBytes(): number {
    return this.buffered
  }

  /** Feed one chunk; returns the envelopes it completed (often none or one). Throws `CodecError`. */
  push(chunk: Uint8Array): Array<EventEnvelope> {
    const out: Array<EventEnvelope> = []
    if (chunk.length === 0) return out
    // Fast path: nothing buffered, decode straight out of the chunk.
    let offset = 0
    if (this.buffered === 0 && this.expected < 0) {
      while (chunk.length - offset >= 4) {
        const length = readLength(chunk, offset, this.maxFrameBytes)
        if (chunk.length - offset - 4 < length) break
        out.push(decodeEnvelope(chunk.subarray(offset + 4, offset + 4 + length)))
        offset += 4 + length
      }
      if (offset === chunk.length) return out
      chunk = chunk.subarray(offset)
    }
    this.chunks.push(chunk)
    this.buffered += chunk.length
    for (;;) {
      if (this.expected < 0) {
        if (this.buffered < 4) return out
        this.expected = readLength(this.take(4), 0, this.maxFrameBytes)
      }
      if (this.buffered < this.expected) return out
      const body = this.take(this.expected)
      this.expected = -1
      out.push(decodeEnvelope(body))
    }
  }

  /** The stream ended: throws `CodecError` (`Truncated`) if it ended inside a frame. */
  end(): void {
    if (this.buffered > 0 || this.expected >= 0) {
      throw new CodecError({ reason: "Truncated", message: "stream ended inside a frame" })
    }
  }

  /** Remove and return the first `n` buffered bytes (n ≤ buffered). */
  private take(n: number): Uint8Array {
    const first = this.chunks[0]!
    if (first.length >= n) {
      this.buffered -= n
      if (first.length === n) this.chunks.shift()
      else this.chunks[0] = first.subarray(n)
      return first.subarray(0, n)
    }
    const out = Buffer.allocUnsafe(n)
    let filled = 0
    while (filled < n) {
      const head = this.chunks[0]!
      const need = n - filled
      if (head.length <= need) {
        out.set(head, filled)
        filled += head.length
        this.chunks.shift()
      } else {
        out.set(head.subarray(0, need), filled)
        this.chunks[0] = head.subarray(need)
        filled += need
      }
    }
    this.buffered -= n
    return out
  }
}

const readLength = (bytes: Uint8Array, offset: number, max: number): number => {
  const length = ((bytes[offset]! << 24) >>> 0) + (bytes[offset + 1]! << 16) + (bytes[offset + 2]! << 8) +
    bytes[offset + 3]!
  if (length === 0) throw new CodecError({ reason: "EmptyFrame", message: "frame length is zero" })
  if (length > max) throw tooLarge(length, max)
  return length
}
