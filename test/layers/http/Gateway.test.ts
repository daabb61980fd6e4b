/**
 * The HTTP gateway over real HTTP on 127.0.0.1 (port 0): every status mapping, the body and batch limits, malformed
 * bodies, SSE items / errors / completion, and a client that disconnects interrupting the handler (unary and SSE).
 * Time (deadlines) runs on the TestClock: the gateway's fibers run in the test's runtime.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Option, Queue, Redacted, Schema, Scope, Stream, TestClock } from "effect"
import * as Http from "node:http"
import * as Discovery from "../../../src/call/Discovery.js"
import * as CallError from "../../../src/errors/CallError.js"
import * as Gateway from "../../../src/layers/http/Gateway.js"
import type { Identity } from "../../../src/schema/Identity.js"
import type * as CallProtocol from "../../../src/services/CallProtocol.js"
import * as Operation from "../../../src/services/Operation.js"
import * as OperationRegistry from "../../../src/services/OperationRegistry.js"
import { listen } from "../../shared/http.js"

/** What the handlers tell the test: started / interrupted, per test. */
interface Signals {
  readonly started: Deferred.Deferred<void>
  readonly interrupted: Deferred.Deferred<void>
}

const operations = (signals: Signals) => [
  Operation.query({
    name: "demo/echo",
    description: "Echoes its text",
    input: Schema.Struct({ text: Schema.String }),
    output: Schema.Struct({ text: Schema.String }),
    handler: ({ text }) => Effect.succeed({ text })
  }),
  Operation.query({
    name: "demo/secret",
    input: Schema.Unknown,
    output: Schema.String,
    access: { requiredScopes: ["secret"] },
    handler: () => Effect.succeed("the secret")
  }),
  Operation.query({
    name: "demo/hidden",
    input: Schema.Unknown,
    output: Schema.String,
    visibility: "internal",
    handler: () => Effect.succeed("hidden")
  }),
  Operation.mutation({
    name: "demo/conflict",
    input: Schema.Unknown,
    output: Schema.Unknown,
    errors: [Operation.error({ code: "CONFLICT", description: "already there", schema: Schema.Struct({ id: Schema.String }), httpStatus: 409 })],
    handler: () => Effect.fail(CallError.domain("CONFLICT", "already there", { id: "x1" }))
  }),
  Operation.mutation({
    name: "demo/undeclared",
    input: Schema.Unknown,
    output: Schema.Unknown,
    handler: () => Effect.fail(CallError.domain("WEIRD", "something odd"))
  }),
  Operation.mutation({
    name: "demo/defect",
    input: Schema.Unknown,
    output: Schema.Unknown,
    handler: () => Effect.die(new Error("secret internals"))
  }),
  Operation.query({
    name: "demo/busy",
    input: Schema.Unknown,
    output: Schema.Unknown,
    handler: () => Effect.fail(new CallError.CallError({ code: "TIMEOUT", message: "upstream busy", retryable: true, details: { retry_after_ms: 2500 } }))
  }),
  Operation.query({
    name: "demo/slow",
    input: Schema.Unknown,
    output: Schema.Unknown,
    handler: () =>
      Effect.zipRight(Deferred.succeed(signals.started, undefined), Effect.never).pipe(
        Effect.onInterrupt(() => Deferred.succeed(signals.interrupted, undefined))
      )
  }),
  Operation.subscription({
    name: "demo/ticks",
    input: Schema.Struct({ count: Schema.Number, fail: Schema.optional(Schema.Boolean) }),
    output: Schema.Struct({ n: Schema.Number }),
    errors: [Operation.error({ code: "TICK_FAILED", description: "ticking failed", httpStatus: 409 })],
    handler: ({ count, fail }) =>
      Stream.range(1, count).pipe(
        Stream.map((n) => ({ n })),
        Stream.concat(fail === true ? Stream.fail(CallError.domain("TICK_FAILED", "no more ticks")) : Stream.empty)
      )
  }),
  Operation.subscription({
    name: "demo/forever",
    input: Schema.Unknown,
    output: Schema.Number,
    handler: () =>
      Stream.concat(Stream.make(1), Stream.fromEffect(Effect.zipRight(Deferred.succeed(signals.started, undefined), Effect.never))).pipe(
        Stream.ensuring(Deferred.succeed(signals.interrupted, undefined))
      )
  })
]

const identities: Record<string, Identity> = {
  alk_secret_token: { id: "alk_secr", scopes: ["secret"], resources: {} },
  alk_plain_token: { id: "alk_plai", scopes: [], resources: {} }
}

const authenticator = (failures: Array<string>): CallProtocol.Authenticator => ({
  resolveFingerprint: () => Effect.succeed(Option.none()),
  resolveToken: (token) =>
    Effect.sync(() => {
      const found = identities[Redacted.value(token)]
      if (found === undefined) failures.push("token")
      return Option.fromNullable(found)
    })
})

interface Served {
  readonly url: string
  readonly signals: Signals
  readonly failures: Array<string>
}

/** A gateway on a `node:http` server on 127.0.0.1:0; the gateway lives in `gatewayScope` when given. */
const serve = (options: Partial<Gateway.Options> = {}, gatewayScope?: Scope.Scope): Effect.Effect<Served, never, Scope.Scope> =>
  Effect.gen(function*() {
    const signals: Signals = { started: yield* Deferred.make<void>(), interrupted: yield* Deferred.make<void>() }
    const failures: Array<string> = []
    const source = Discovery.withDiscovery(OperationRegistry.sourceOf(operations(signals)))
    const make = Gateway.make({ source, authenticator: authenticator(failures), ...options })
    const gateway = yield* (gatewayScope === undefined ? make : Scope.extend(make, gatewayScope))
    const server = Http.createServer(gateway.handler)
    const base = yield* listen(server)
    return { url: base, signals, failures }
  })

interface Answer {
  readonly status: number
  readonly headers: Headers
  readonly body: any
}

const request = (url: string, init: RequestInit = {}): Effect.Effect<Answer> =>
  Effect.promise(async () => {
    const response = await fetch(url, init)
    const text = await response.text()
    let body: unknown = text
    try {
      body = JSON.parse(text)
    } catch {
      // not JSON (an event stream): keep the text
    }
    return { status: response.status, headers: response.headers, body }
  })

const post = (url: string, body: unknown, token?: string) =>
  request(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
    body: typeof body === "string" ? body : JSON.stringify(body)
  })

/** Parse an event stream into its events. */
const events = (text: string) =>
  text.split("\n\n").filter((block) => block !== "").map((block) => {
    const lines = block.split("\n")
    const event = lines.find((l) => l.startsWith("event: "))?.slice(7) ?? "message"
    const data = lines.filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n")
    return { event, data: JSON.parse(data) as unknown }
  })

describe("HTTP gateway", () => {
  it.scoped("POST /call and POST /call/NAME answer {request_id, result, output}; GET /healthz is open", () =>
    Effect.gen(function*() {
      const { url } = yield* serve()
      const health = yield* request(`${url}/healthz`)
      expect(health).toMatchObject({ status: 200, body: { status: "ok" } })

      const called = yield* post(`${url}/call`, { operation: "demo/echo", input: { text: "hi" } })
      expect(called.status).toBe(200)
      expect(called.body).toMatchObject({ result: "ok", output: { text: "hi" } })
      expect(called.body.request_id).toMatch(/^[0-9a-f-]{36}$/)
      expect(called.headers.get("x-request-id")).toBe(called.body.request_id)

      // The wire's leading slash is accepted; the typed path takes the input as the body.
      expect((yield* post(`${url}/call`, { operation: "/demo/echo", input: { text: "a" } })).body.output).toEqual({ text: "a" })
      const typed = yield* post(`${url}/call/demo/echo`, { text: "typed" })
      expect(typed).toMatchObject({ status: 200, body: { result: "ok", output: { text: "typed" } } })
      const unknownRoute = yield* request(`${url}/nope`)
      expect(unknownRoute).toMatchObject({ status: 404, body: { code: "NOT_FOUND", message: "no such endpoint: GET /nope" } })
    }))

  it.scoped("status mapping: 404, 401 / 403, 422, 400, declared http_status, 500", () =>
    Effect.gen(function*() {
      const { failures, url } = yield* serve()
      const call = (operation: string, input: unknown = {}, token?: string) => post(`${url}/call`, { operation, input }, token)

      const missing = yield* call("demo/nothing")
      expect(missing).toMatchObject({ status: 404, body: { code: "NOT_FOUND", message: "operation not found: demo/nothing", retryable: false } })
      // An Internal operation is not found either, with the same message shape (existence is not leaked).
      expect(yield* call("demo/hidden")).toMatchObject({ status: 404, body: { code: "NOT_FOUND", message: "operation not found: demo/hidden" } })

      const anonymous = yield* call("demo/secret")
      expect(anonymous).toMatchObject({ status: 401, body: { code: "FORBIDDEN", message: "authentication required" } })
      expect(anonymous.headers.get("www-authenticate")).toBe("Bearer")
      const lacking = yield* call("demo/secret", {}, "alk_plain_token")
      expect(lacking).toMatchObject({ status: 403, body: { code: "FORBIDDEN", message: "missing required scope: secret" } })
      expect(yield* call("demo/secret", {}, "alk_secret_token")).toMatchObject({ status: 200, body: { output: "the secret" } })
      // An unknown token is anonymous (the ACL decides) and counts as a failed authentication.
      expect(failures).toEqual([])
      expect(yield* call("demo/secret", {}, "alk_wrong")).toMatchObject({ status: 401 })
      expect(yield* call("demo/echo", { text: "ok" }, "alk_wrong")).toMatchObject({ status: 200 })
      expect(failures).toEqual(["token", "token"])

      expect(yield* call("demo/echo", { text: 5 })).toMatchObject({
        status: 422,
        body: { code: "INVALID_INPUT", message: "invalid input at text: Expected string, actual 5" }
      })
      expect(yield* call("demo/echo", {})).toMatchObject({ status: 422, body: { message: "missing required field: text" } })
      expect(yield* call("demo/ticks", { count: 1 })).toMatchObject({ status: 400, body: { code: "INVALID_OPERATION_TYPE" } })

      const conflict = yield* call("demo/conflict")
      expect(conflict).toMatchObject({ status: 409, body: { code: "CONFLICT", message: "already there", details: { id: "x1" } } })
      const undeclared = yield* call("demo/undeclared")
      expect(undeclared).toMatchObject({ status: 500, body: { code: "INTERNAL", details: { code: "WEIRD" } } })
      const defect = yield* call("demo/defect")
      expect(defect).toMatchObject({ status: 500, body: { code: "INTERNAL", message: "internal error" } })
      expect(JSON.stringify(defect.body)).not.toContain("secret internals")

      const busy = yield* call("demo/busy")
      expect(busy).toMatchObject({ status: 504, body: { code: "TIMEOUT", retryable: true } })
      expect(busy.headers.get("retry-after")).toBe("3")
    }))

  it.scoped("a call past its deadline is 504 TIMEOUT and its handler is interrupted", () =>
    Effect.gen(function*() {
      const { signals, url } = yield* serve({ timeout: "5 seconds" })
      const answer = yield* Effect.fork(post(`${url}/call`, { operation: "demo/slow" }))
      yield* Deferred.await(signals.started)
      yield* TestClock.adjust("5 seconds")
      const timedOut = yield* answer.await.pipe(Effect.flatten)
      expect(timedOut).toMatchObject({ status: 504, body: { code: "TIMEOUT", message: "request timed out", retryable: true } })
      expect(timedOut.headers.get("retry-after")).toBeNull()
      yield* Deferred.await(signals.interrupted)
    }))

  it.scoped("too many calls in flight for one caller: 503 OVERLOADED with Retry-After; a 429 from the admission gate", () =>
    Effect.gen(function*() {
      const { signals, url } = yield* serve({ limits: { maxInFlightPerCaller: 1 } })
      yield* Effect.fork(post(`${url}/call`, { operation: "demo/slow" }))
      yield* Deferred.await(signals.started)
      const refused = yield* post(`${url}/call`, { operation: "demo/echo", input: { text: "x" } })
      expect(refused).toMatchObject({ status: 503, body: { code: "OVERLOADED", retryable: true } })
      expect(refused.headers.get("retry-after")).toBe("1")
      // Another caller (an identity) has its own budget.
      expect((yield* post(`${url}/call`, { operation: "demo/echo", input: { text: "x" } }, "alk_plain_token")).status).toBe(200)

      const gated = yield* serve({ admit: () => Effect.fail({ message: "cooling down", retryAfterMs: 4200 }) })
      const blocked = yield* post(`${gated.url}/call`, { operation: "demo/echo", input: { text: "x" } })
      expect(blocked).toMatchObject({ status: 429, body: { code: "TOO_MANY_REQUESTS", message: "cooling down" } })
      expect(blocked.headers.get("retry-after")).toBe("5")
      // Health checks are not gated.
      expect((yield* request(`${gated.url}/healthz`)).status).toBe(200)
    }))

  it.scoped("malformed bodies are 400 with a clear message, a body over the limit 413, never a 500", () =>
    Effect.gen(function*() {
      const { url } = yield* serve({ maxBodyBytes: 1024, maxInputDepth: 8 })
      const bad = (body: string | Uint8Array, path = "/call") =>
        request(`${url}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body })

      expect(yield* bad("{not json")).toMatchObject({ status: 400, body: { code: "BAD_REQUEST" } })
      expect((yield* bad("{not json")).body.message).toMatch(/^request body is not valid JSON: /)
      expect(yield* bad("")).toMatchObject({ status: 400, body: { message: "request body is empty: expected JSON" } })
      expect(yield* bad(new Uint8Array([0x22, 0xff, 0x22]))).toMatchObject({ status: 400, body: { message: "request body is not valid UTF-8" } })
      expect(yield* bad("[1]")).toMatchObject({ status: 400, body: { message: `request body must be a JSON object {"operation": "...", "input": ...}` } })
      expect(yield* bad(`{"input": 1}`)).toMatchObject({ status: 400, body: { message: `request body: "operation" must be a non-empty string` } })
      expect(yield* bad(`{"operation": "demo/echo", "timeout_ms": "soon"}`)).toMatchObject({ status: 400 })
      // Depth: the body (the envelope is two levels) and the input (the dispatcher's INVALID_INPUT).
      expect(yield* bad("[".repeat(20) + "]".repeat(20))).toMatchObject({ status: 400, body: { message: "request body is nested deeper than 10 levels" } })
      const deepInput = JSON.stringify({ operation: "demo/echo", input: [[[[[[[[[1]]]]]]]]] })
      expect(yield* bad(deepInput)).toMatchObject({ status: 422, body: { code: "INVALID_INPUT", message: "input is nested deeper than 8 levels" } })

      const large = yield* bad(JSON.stringify({ operation: "demo/echo", input: { text: "x".repeat(2000) } }))
      expect(large).toMatchObject({ status: 413, body: { code: "PAYLOAD_TOO_LARGE", message: "request body is larger than 1024 bytes" } })
      // Without a Content-Length (chunked), the limit holds while reading.
      const chunked = yield* Effect.promise(() =>
        new Promise<number>((resolve, reject) => {
          const req = Http.request(`${url}/call`, { method: "POST", headers: { "content-type": "application/json" } }, (res) => {
            res.resume()
            resolve(res.statusCode ?? 0)
          })
          req.on("error", reject)
          req.write("[")
          req.write(" ".repeat(2000))
          req.end("]")
        })
      )
      expect(chunked).toBe(413)
      // The gateway still serves.
      expect((yield* post(`${url}/call`, { operation: "demo/echo", input: { text: "still here" } })).status).toBe(200)
    }))

  it.scoped("POST /batch answers each call in order; a batch over the limit is 400", () =>
    Effect.gen(function*() {
      const { url } = yield* serve({ maxBatch: 3 })
      const batch = yield* post(`${url}/batch`, [
        { operation: "demo/echo", input: { text: "one" } },
        { operation: "demo/secret" },
        { operation: "demo/conflict" }
      ])
      expect(batch.status).toBe(200)
      expect(batch.body.results).toMatchObject([
        { result: "ok", output: { text: "one" } },
        { result: "error", status: 401, error: { code: "FORBIDDEN", message: "authentication required" } },
        { result: "error", status: 409, error: { code: "CONFLICT", details: { id: "x1" } } }
      ])
      const tooMany = yield* post(`${url}/batch`, Array.from({ length: 4 }, () => ({ operation: "demo/echo", input: { text: "x" } })))
      expect(tooMany).toMatchObject({ status: 400, body: { message: "a batch has at most 3 calls, this one 4" } })
      expect(yield* post(`${url}/batch`, { operation: "demo/echo" })).toMatchObject({ status: 400 })
      expect(yield* post(`${url}/batch`, [{ operation: 3 }])).toMatchObject({ status: 400, body: { message: `batch item 0: "operation" must be a non-empty string` } })
    }))

  it.scoped("GET /search lists what the caller may call; GET /schema describes it", () =>
    Effect.gen(function*() {
      const { url } = yield* serve()
      const names = (answer: Answer) => (answer.body.operations as Array<{ name: string }>).map((o) => o.name)
      const anonymous = yield* request(`${url}/search?query=demo`)
      expect(names(anonymous)).not.toContain("demo/secret")
      expect(names(anonymous)).not.toContain("demo/hidden")
      expect(anonymous.body.operations).toContainEqual({ name: "demo/echo", description: "Echoes its text", type: "query" })
      const allowed = yield* request(`${url}/search?query=SECRET`, { headers: { authorization: "Bearer alk_secret_token" } })
      expect(names(allowed)).toEqual(["demo/secret"])
      // By description too.
      expect(names(yield* request(`${url}/search?query=echoes`))).toEqual(["demo/echo"])

      const schema = yield* request(`${url}/schema?name=demo/ticks`)
      expect(schema).toMatchObject({ status: 200, body: { name: "demo/ticks", op_type: "subscription" } })
      expect(yield* request(`${url}/schema?name=demo/secret`)).toMatchObject({ status: 404 })
      expect(yield* request(`${url}/schema`)).toMatchObject({ status: 422, body: { message: "missing required field: name" } })
    }))

  it.scoped("POST /subscribe streams items as SSE, then completed; an error is an error event; a refused one is a status", () =>
    Effect.gen(function*() {
      const { url } = yield* serve()
      const ok = yield* post(`${url}/subscribe`, { operation: "demo/ticks", input: { count: 3 } })
      expect(ok.status).toBe(200)
      expect(ok.headers.get("content-type")).toBe("text/event-stream")
      expect(events(ok.body)).toEqual([
        { event: "message", data: { n: 1 } },
        { event: "message", data: { n: 2 } },
        { event: "message", data: { n: 3 } },
        { event: "completed", data: {} }
      ])
      const failed = yield* post(`${url}/subscribe/demo/ticks`, { count: 1, fail: true })
      expect(events(failed.body)).toEqual([
        { event: "message", data: { n: 1 } },
        { event: "error", data: { code: "TICK_FAILED", message: "no more ticks", retryable: false } }
      ])
      expect(yield* post(`${url}/subscribe`, { operation: "demo/echo", input: { text: "x" } })).toMatchObject({
        status: 400,
        body: { code: "INVALID_OPERATION_TYPE" }
      })
      expect(yield* post(`${url}/subscribe`, { operation: "demo/ticks", input: {} })).toMatchObject({ status: 422 })
    }))

  it.scoped("a client that disconnects from an SSE stream interrupts the subscription's handler", () =>
    Effect.gen(function*() {
      const { signals, url } = yield* serve()
      const first = yield* Effect.async<string>((resume) => {
        const req = Http.request(`${url}/subscribe`, { method: "POST", headers: { "content-type": "application/json" } }, (res) => {
          res.setEncoding("utf8")
          res.once("data", (chunk: string) => {
            // Gone after the first event.
            req.destroy()
            resume(Effect.succeed(chunk))
          })
        })
        req.end(JSON.stringify({ operation: "demo/forever" }))
      })
      expect(first).toBe("data: 1\n\n")
      yield* Deferred.await(signals.interrupted)
    }))

  it.scoped("a quiet event stream gets a keep-alive comment every 15 s", () =>
    Effect.gen(function*() {
      const { signals, url } = yield* serve()
      const chunks = yield* Queue.unbounded<string>()
      const req = Http.request(`${url}/subscribe/demo/forever`, { method: "POST", headers: { "content-type": "application/json" } }, (res) => {
        res.setEncoding("utf8")
        res.on("data", (chunk: string) => Queue.unsafeOffer(chunks, chunk))
      })
      req.on("error", () => undefined)
      req.end("{}")
      expect(yield* Queue.take(chunks)).toBe("data: 1\n\n")
      yield* Deferred.await(signals.started)
      yield* TestClock.adjust("15 seconds")
      expect(yield* Queue.take(chunks)).toBe(": keep-alive\n\n")
      req.destroy()
      yield* Deferred.await(signals.interrupted)
    }))

  it.scoped("a client that disconnects during a call interrupts the handler", () =>
    Effect.gen(function*() {
      const { signals, url } = yield* serve()
      const req = Http.request(`${url}/call`, { method: "POST", headers: { "content-type": "application/json" } })
      req.on("error", () => undefined)
      req.end(JSON.stringify({ operation: "demo/slow" }))
      yield* Deferred.await(signals.started)
      req.destroy()
      yield* Deferred.await(signals.interrupted)
    }))

  it.scoped("closing the gateway's scope interrupts the requests still running", () =>
    Effect.gen(function*() {
      const gatewayScope = yield* Scope.make()
      // The server stays up (its connections open): only the gateway's scope closes.
      const { signals, url } = yield* serve({}, gatewayScope)
      const req = Http.request(`${url}/call`, { method: "POST", headers: { "content-type": "application/json" } })
      req.on("error", () => undefined)
      req.end(JSON.stringify({ operation: "demo/slow" }))
      yield* Deferred.await(signals.started)
      yield* Scope.close(gatewayScope, Exit.void)
      yield* Deferred.await(signals.interrupted)
    }))
})
