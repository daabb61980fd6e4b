import { describe, expect, it } from "@effect/vitest"
import { Either, Schema } from "effect"
import * as CallError from "../../src/errors/CallError.js"
import * as Envelope from "../../src/schema/Envelope.js"

describe("Envelope schemas", () => {
  it("decodes an envelope and rejects a non-object payload", () => {
    const decode = Schema.decodeUnknownEither(Envelope.EventEnvelope)
    expect(Either.isRight(decode({ type: "call.aborted", id: "x", payload: {} }))).toBe(true)
    expect(Either.isLeft(decode({ type: "call.aborted", id: "x", payload: [] }))).toBe(true)
    expect(Either.isLeft(decode({ type: "call.aborted", id: 1, payload: {} }))).toBe(true)
  })

  it("call.requested: input optional, forwarded_for an identity, auth_token a string", () => {
    const decode = Schema.decodeUnknownEither(Envelope.CallRequested)
    expect(decode({ operationId: "/fs/readFile" })).toEqual(Either.right({ operationId: "/fs/readFile" }))
    const full = {
      operationId: "fs/readFile",
      input: { path: "/etc/hosts" },
      auth_token: "alk_x",
      forwarded_for: { id: "alice", scopes: ["fs"], resources: { fs: ["read"] } }
    }
    expect(decode(full)).toEqual(Either.right(full))
    expect(Either.isLeft(decode({ operationId: "a/b", forwarded_for: { id: "x" } }))).toBe(true)
  })

  it("call.error omits details when absent — in the schema and in the payload the engine sends", () => {
    const encode = Schema.encodeSync(Schema.parseJson(Envelope.CallErrorPayload))
    expect(encode({ code: "TIMEOUT", message: "request timed out", retryable: true })).toBe(
      `{"code":"TIMEOUT","message":"request timed out","retryable":true}`
    )
    expect(JSON.stringify(CallError.timeout().toPayload())).toBe(
      `{"code":"TIMEOUT","message":"request timed out","retryable":true}`
    )
    expect(JSON.stringify(CallError.internal("x", { code: "E" }).toPayload())).toBe(
      `{"code":"INTERNAL","message":"x","retryable":false,"details":{"code":"E"}}`
    )
  })

  it("reads call.error payloads off the wire: unknown codes are kept but classify as INTERNAL", () => {
    const domain = CallError.fromPayload({ code: "NOT_READY", message: "later", retryable: false, details: { n: 1 } })
    expect(domain.code).toBe("NOT_READY")
    expect(domain.protocolCode).toBe("INTERNAL")
    expect(domain.details).toEqual({ n: 1 })
    expect(CallError.fromPayload({ code: "TIMEOUT", message: "request timed out", retryable: true }).protocolCode).toBe(
      "TIMEOUT"
    )
    expect(CallError.fromPayload({ message: 3 }).code).toBe("INTERNAL")
  })
})
