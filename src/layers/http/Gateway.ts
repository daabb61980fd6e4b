/**
 * The HTTP gateway (SPEC §14): a node's operations over plain HTTP and Server-Sent Events, on the same `node:http(s)`
 * server (one port, one TLS identity) as the call-protocol WebSocket. Routing and responses are
 * `@effect/platform`'s `HttpRouter` mounted with `NodeHttpServer.makeHandler`.
 *
 * Every call goes through the same dispatch as the wire (`Dispatcher.prepare`: lookup, Internal → NOT_FOUND, op type,
 * access control, input depth and schema, deadline) with the same identity rules: `Authorization: Bearer …` is
 * resolved like a wire `auth_token` (one that resolves is the caller; one that does not counts as a failed
 * authentication and the caller falls back to its TLS client certificate's fingerprint over https, else anonymous),
 * and the ACL decides.
 *
 * | route | answer |
 * |---|---|
 * | `POST /call {operation, input, timeout_ms?}` | `{request_id, result: "ok", output}` |
 * | `POST /call/NAMESPACE/OP` (body = the input) | the same, typed per operation in `/openapi.json` |
 * | `POST /batch [{operation, input}, …]` | `{results: [{request_id, result: "ok", output} \| {request_id, result: "error", status, error}]}` |
 * | `POST /subscribe {operation, input}`, `POST /subscribe/NAMESPACE/OP` | `text/event-stream`: `data: <item JSON>` per item, `event: error` + `data: <CallError JSON>`, `event: completed` at the end |
 * | `GET /search?query=` | `{operations: [{name, description, type}]}`: External operations the caller may call |
 * | `GET /schema?name=` | `services/schema` for the caller |
 * | `GET /openapi.json` | the OpenAPI 3.1 document of what the caller may call (`peer/ToOpenApi`) |
 * | `GET /healthz` | `{status: "ok"}`, unauthenticated |
 * | `GET /metrics` | the process's metrics in the Prometheus text format; an authenticated caller only unless `metrics.auth` is `"public"` |
 *
 * Errors are `{code, message, retryable, details?}` with the status: NOT_FOUND 404 (Internal operations too),
 * FORBIDDEN 401 without an identity (with `WWW-Authenticate: Bearer`) and 403 with one, INVALID_INPUT 422,
 * INVALID_OPERATION_TYPE 400, TIMEOUT 504 (`Retry-After` when `details.retry_after_ms` says), OVERLOADED 503
 * (`Retry-After: 1`), INTERNAL 500, a declared domain code its `http_status` (else 500). The gateway's own refusals:
 * `BAD_REQUEST` 400 (a body that is not JSON, not UTF-8, nested too deep, or not the expected shape),
 * `PAYLOAD_TOO_LARGE` 413 (`maxBodyBytes`), `TOO_MANY_REQUESTS` 429 (the address is in its auth-failure cooldown).
 *
 * A client that disconnects interrupts its request's fiber: the handler (unary or streaming) is interrupted, as a
 * `call.aborted` would. Closing the gateway's scope interrupts every request still running.
 */
import type * as Http from "node:http"
import type * as Tls from "node:tls"
// By module, not through the package index (which loads every platform module: the CLI's start-up cost).
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import { Chunk, Clock, Data, Duration, Effect, Fiber, FiberId, FiberSet, Option, Redacted, Schedule, Stream, Tracer } from "effect"
import type { Scope } from "effect"
import * as Deadlines from "../../call/Deadlines.js"
import * as Dispatcher from "../../call/Dispatcher.js"
import type { OperationSource } from "../../call/Dispatcher.js"
import * as CallError from "../../errors/CallError.js"
import * as Served from "../../observability/Served.js"
import * as Tracing from "../../observability/Tracing.js"
import type { Backend as ToMcpBackend, Outcome as ToMcpOutcome } from "../../peer/ToMcp.js"
import * as NodeMetrics from "../../observability/NodeMetrics.js"
import * as Prometheus from "../../observability/Prometheus.js"
import * as ToOpenApi from "../../peer/ToOpenApi.js"
import type { Identity } from "../../schema/Identity.js"
import * as Json from "../../schema/Json.js"
import * as CallProtocol from "../../services/CallProtocol.js"
import type { Address } from "../../services/Endpoint.js"
import * as Operation from "../../services/Operation.js"
import * as TlsIdentity from "../../services/Tls.js"

/** Default largest request body: 1 MiB. */
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024
/** Default largest batch: 64 calls. */
export const DEFAULT_MAX_BATCH = 64

export interface Options {
  /** The operations served (the node's served source: its own, discovery, peers' exported ones). */
  readonly source: OperationSource
  /** Extends every handler's `ctx.env` (the peer graph's routing), as on the wire. */
  readonly extendEnv?: Dispatcher.Options["extendEnv"]
  /** Resolves bearer tokens and client-certificate fingerprints (default: everyone is anonymous). */
  readonly authenticator?: CallProtocol.Authenticator
  /** Checked before each request (e.g. the address's auth-failure cooldown): a refusal is answered 429. */
  readonly admit?: (remote: Address) => Effect.Effect<void, { readonly message: string; readonly retryAfterMs?: number }>
  /** Told of every bearer token that resolved to nobody (e.g. to count failures per address). */
  readonly onAuthFailure?: (remote: Address) => Effect.Effect<void>
  /** What one caller may ask (calls in flight per caller, largest `timeout_ms`, anonymous subscriptions' deadline). */
  readonly limits?: Partial<CallProtocol.Limits> | Effect.Effect<Partial<CallProtocol.Limits>>
  /**
   * Counts calls in flight per caller against `maxInFlightPerCaller`. Pass the wire's
   * (`CallProtocol.callerAdmission(serveOptions)`, as the node does) so one caller's HTTP and wire calls share one
   * limit; default: a counter of the gateway's own.
   */
  readonly callerAdmission?: CallProtocol.CallerAdmission
  /** Largest request body in bytes (default 1 MiB); larger is 413. */
  readonly maxBodyBytes?: number
  /** Deadline of a call that asks for none (default 30 s): past it TIMEOUT (504) and the handler is interrupted. */
  readonly timeout?: Duration.DurationInput
  /** Largest batch (default 64 calls). */
  readonly maxBatch?: number
  /** How often a quiet event stream gets a `: keep-alive` comment line (default 15 s). */
  readonly sseKeepAlive?: Duration.DurationInput
  /** Nesting limit of inputs (default 64 levels). */
  readonly maxInputDepth?: number
  /** `info` of the OpenAPI document. */
  readonly title?: string
  readonly version?: string
  /**
   * Who may read `GET /metrics`: `"token"` (default) a caller whose bearer token (or TLS client certificate) resolves
   * to an identity — anyone else gets 401 —, `"public"` anyone.
   */
  readonly metrics?: { readonly auth?: "token" | "public" }
  /** A tracing span per HTTP request (the platform's middleware; default off: it costs ~15% of a call's CPU). */
  readonly tracing?: boolean
  /**
   * Also serve MCP (Streamable HTTP) at `/mcp`: `true`, or `{mode, maxSessions, idleTimeout}` (see `peer/ToMcp`;
   * defaults: one tool per operation, 1,024 sessions, 10 minutes idle).
   */
  readonly mcp?: boolean | {
    readonly mode?: "operations" | "generic"
    readonly maxSessions?: number
    readonly idleTimeout?: Duration.DurationInput
  }
}

/** A refusal of the gateway itself (before any operation is involved). */
class Refusal extends Data.TaggedError("Refusal")<{
  readonly status: number
  readonly code: "BAD_REQUEST" | "PAYLOAD_TOO_LARGE" | "TOO_MANY_REQUESTS" | "NOT_FOUND"
  readonly message: string
  readonly headers?: Record<string, string>
}> {}

/** Who is calling, resolved once per request. */
interface Caller {
  readonly identity: Option.Option<Identity>
  readonly remote: Address
  /** The client's span from a `traceparent` header (W3C Trace Context); a malformed one is ignored. */
  readonly trace: Tracer.ExternalSpan | undefined
}

const bearer = (header: string | undefined): Option.Option<Redacted.Redacted<string>> => {
  const match = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header)
  return match === null ? Option.none() : Option.some(Redacted.make(match[1]!))
}

const jsonHeaders = { "cache-control": "no-store" }

const refusalResponse = (refusal: Refusal) =>
  HttpServerResponse.unsafeJson(
    { code: refusal.code, message: refusal.message, retryable: refusal.status === 429 },
    { status: refusal.status, headers: { ...jsonHeaders, ...refusal.headers } }
  )

/** The HTTP status of a call error (the table at the top of this module). */
export const statusOf = (
  error: CallError.CallError,
  identity: Option.Option<Identity>,
  declared?: ReadonlyArray<Operation.ErrorDefinition>
): number => {
  switch (error.code) {
    case "NOT_FOUND":
      return 404
    case "FORBIDDEN":
      return Option.isNone(identity) ? 401 : 403
    case "INVALID_INPUT":
      return 422
    case "INVALID_OPERATION_TYPE":
      return 400
    case "TIMEOUT":
      return 504
    case "OVERLOADED":
      return 503
    case "INTERNAL":
      return 500
    default: {
      const status = declared?.find((e) => e.code === error.code)?.httpStatus
      return status !== undefined && status >= 400 && status <= 599 ? status : 500
    }
  }
}

const retryAfterMs = (error: CallError.CallError): number | undefined => {
  if (error.code === "OVERLOADED") return 1000
  const details = error.details
  if (typeof details !== "object" || details === null) return undefined
  const ms = (details as Record<string, unknown>).retry_after_ms
  return typeof ms === "number" && Number.isFinite(ms) && ms >= 0 ? ms : undefined
}

const errorHeaders = (error: CallError.CallError, status: number): Record<string, string> => {
  const headers: Record<string, string> = { ...jsonHeaders }
  const retry = retryAfterMs(error)
  if (retry !== undefined) headers["retry-after"] = String(Math.ceil(retry / 1000))
  if (status === 401) headers["www-authenticate"] = "Bearer"
  return headers
}

/** Serialize a value for a response; a value JSON cannot carry (a BigInt, a cycle) is INTERNAL. */
const stringify = (value: unknown): string | undefined => {
  try {
    return JSON.stringify(value)
  } catch {
    return undefined
  }
}

const jsonResponse = (body: unknown, status: number, headers: Record<string, string> = jsonHeaders) => {
  const text = stringify(body)
  return text === undefined
    ? HttpServerResponse.text(JSON.stringify(CallError.internal("internal error").toPayload()), {
      status: 500,
      contentType: "application/json",
      headers: jsonHeaders
    })
    : HttpServerResponse.text(text, { status, contentType: "application/json", headers })
}

/** The path of a request, without its query. */
const pathOf = (request: Http.IncomingMessage): string => {
  const url = request.url ?? "/"
  const query = url.indexOf("?")
  return query < 0 ? url : url.slice(0, query)
}

const decoder = new TextDecoder("utf-8", { fatal: true })
const encoder = new TextEncoder()
const keepAliveBytes = encoder.encode(": keep-alive\n\n")

/** Read a request body as JSON: bounded in size (413), UTF-8, parsed, depth-checked; anything else is 400. */
const readJson = (
  incoming: Http.IncomingMessage,
  maxBytes: number,
  maxDepth: number,
  emptyAs?: unknown
): Effect.Effect<unknown, Refusal> =>
  Effect.flatMap(
    Effect.async<Uint8Array, Refusal>((resume) => {
      const tooLarge = () =>
        new Refusal({
          status: 413,
          code: "PAYLOAD_TOO_LARGE",
          message: `request body is larger than ${maxBytes} bytes`,
          headers: { connection: "close" }
        })
      const declared = Number(incoming.headers["content-length"])
      if (Number.isFinite(declared) && declared > maxBytes) return resume(Effect.fail(tooLarge()))
      const chunks: Array<Buffer> = []
      let size = 0
      const cleanup = () => {
        incoming.off("data", onData)
        incoming.off("end", onEnd)
        incoming.off("error", onError)
      }
      const onData = (chunk: Buffer) => {
        size += chunk.length
        if (size > maxBytes) {
          cleanup()
          // Keep reading (and dropping) the rest so the answer can be written; the connection closes after it.
          incoming.resume()
          return resume(Effect.fail(tooLarge()))
        }
        chunks.push(chunk)
      }
      const onEnd = () => {
        cleanup()
        resume(Effect.succeed(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)))
      }
      const onError = () => {
        cleanup()
        resume(Effect.fail(new Refusal({ status: 400, code: "BAD_REQUEST", message: "the request body could not be read" })))
      }
      incoming.on("data", onData)
      incoming.on("end", onEnd)
      incoming.on("error", onError)
      return Effect.sync(cleanup)
    }),
    (bytes) => {
      const bad = (message: string) => Effect.fail(new Refusal({ status: 400, code: "BAD_REQUEST", message }))
      let text: string
      try {
        text = decoder.decode(bytes)
      } catch {
        return bad("request body is not valid UTF-8")
      }
      if (text.trim() === "") return emptyAs === undefined ? bad("request body is empty: expected JSON") : Effect.succeed(emptyAs)
      let value: unknown
      try {
        value = JSON.parse(text)
      } catch (error) {
        return bad(`request body is not valid JSON: ${CallError.echo(error instanceof Error ? error.message : String(error))}`)
      }
      if (Json.exceedsDepth(value, maxDepth)) return bad(Json.tooDeep("request body", maxDepth))
      return Effect.succeed(value)
    }
  )

interface CallRequest {
  readonly operation: string
  readonly input: unknown
  readonly timeoutMs: number | undefined
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** `{operation, input?, timeout_ms?}`, or why not. */
const parseCallRequest = (value: unknown, where: string): CallRequest | string => {
  if (!isRecord(value)) return `${where} must be a JSON object {"operation": "...", "input": ...}`
  const { input, operation, timeout_ms } = value
  if (typeof operation !== "string" || operation === "") return `${where}: "operation" must be a non-empty string`
  if (timeout_ms !== undefined && (typeof timeout_ms !== "number" || !Number.isFinite(timeout_ms) || timeout_ms < 0)) {
    return `${where}: "timeout_ms" must be a non-negative number`
  }
  return { operation, input: input === undefined ? null : input, timeoutMs: timeout_ms }
}

/** The running gateway: a `node:http` request listener. */
export interface Gateway {
  readonly handler: (request: Http.IncomingMessage, response: Http.ServerResponse) => void
}

/** Build the gateway. Closing the scope interrupts the requests still running. */
export const make = (options: Options): Effect.Effect<Gateway, never, Scope.Scope> =>
  Effect.gen(function*() {
    const source = options.source
    const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES
    const maxBatch = options.maxBatch ?? DEFAULT_MAX_BATCH
    const sseKeepAlive = options.sseKeepAlive ?? "15 seconds"
    const maxInputDepth = options.maxInputDepth ?? Json.DEFAULT_MAX_DEPTH
    // The envelope ({operation, input}) and a batch's array wrap the input: two levels more than the input may use.
    const maxBodyDepth = maxInputDepth + 2
    // One timer for every call's deadline.
    const deadlines = yield* Deadlines.make
    const dispatcher = yield* Dispatcher.make({
      source,
      deadlines,
      ...(options.extendEnv === undefined ? {} : { extendEnv: options.extendEnv }),
      ...(options.timeout === undefined ? {} : { defaultTimeout: options.timeout }),
      maxInputDepth
    })
    const limits: Effect.Effect<CallProtocol.Limits> = options.limits === undefined
      ? Effect.succeed(CallProtocol.defaultLimits)
      : Effect.isEffect(options.limits)
      ? Effect.map(options.limits, (l) => ({ ...CallProtocol.defaultLimits, ...l }))
      : Effect.succeed({ ...CallProtocol.defaultLimits, ...options.limits })
    const authenticator = options.authenticator
    const metricsPublic = options.metrics?.auth === "public"

    // Calls in flight per caller (an identity, or an anonymous address), shared with the wire when the node says so.
    const admission = options.callerAdmission ?? CallProtocol.makeCallerAdmission()
    const acquire = (caller: Caller, max: number) => admission.acquire(caller.identity, caller.remote.host, max)

    const incomingOf = Effect.map(HttpServerRequest.HttpServerRequest, NodeHttpServerRequest.toIncomingMessage)

    /** Admission, then identity: bearer token, else the TLS client certificate's fingerprint, else anonymous. */
    const callerOf = (incoming: Http.IncomingMessage): Effect.Effect<Caller, Refusal> => Effect.gen(function*() {
      const remote: Address = { host: incoming.socket.remoteAddress ?? "", port: incoming.socket.remotePort ?? 0 }
      const traceparent = incoming.headers.traceparent
      const trace = traceparent === undefined ? undefined : Tracing.parse(traceparent, incoming.headers.tracestate)
      if (options.admit !== undefined) {
        yield* Effect.mapError(options.admit(remote), (refused) =>
          new Refusal({
            status: 429,
            code: "TOO_MANY_REQUESTS",
            message: refused.message,
            headers: refused.retryAfterMs === undefined ? {} : { "retry-after": String(Math.ceil(refused.retryAfterMs / 1000)) }
          }))
      }
      if (authenticator === undefined) return { identity: Option.none(), remote, trace }
      const token = bearer(incoming.headers.authorization)
      if (Option.isSome(token)) {
        const resolved = yield* authenticator.resolveToken(token.value)
        if (Option.isSome(resolved)) return { identity: resolved, remote, trace }
        NodeMetrics.countAuthFailure("http")
        if (options.onAuthFailure !== undefined) yield* options.onAuthFailure(remote)
      }
      const socket = incoming.socket as Partial<Tls.TLSSocket>
      const raw = typeof socket.getPeerCertificate === "function" ? socket.getPeerCertificate(true)?.raw : undefined
      const fingerprint = raw === undefined ? Option.none<string>() : TlsIdentity.fingerprint(raw)
      const identity = Option.isNone(fingerprint)
        ? Option.none<Identity>()
        : yield* authenticator.resolveFingerprint(fingerprint.value)
      return { identity, remote, trace }
    })
    const resolveCaller = Effect.flatMap(incomingOf, callerOf)

    const declaredErrors = (name: string) => source.lookup(Operation.normalizeName(name))?.spec.errors

    const errorResponse = (error: CallError.CallError, caller: Caller, operation: string | undefined, requestId?: string) => {
      const status = statusOf(error, caller.identity, operation === undefined ? undefined : declaredErrors(operation))
      const headers = errorHeaders(error, status)
      if (requestId !== undefined) headers["x-request-id"] = requestId
      return jsonResponse(error.toPayload(), status, headers)
    }

    const timeoutOf = (requested: number | undefined, max: number) =>
      requested === undefined ? undefined : Duration.millis(Math.min(requested, max))

    /**
     * One query or mutation, through the same dispatch as the wire. With `expire`, the caller enforces the deadline
     * itself by interrupting the fiber the call runs in (`expire(at)` registers that and returns its cancel): no fiber
     * per call for the timer, as in the engine.
     */
    const callOne = (
      caller: Caller,
      request: CallRequest,
      requestId: string,
      expire?: (at: number) => () => void
    ): Effect.Effect<unknown, CallError.CallError> =>
      Served.served(labelOf(request.operation), caller.trace, (call) =>
        Effect.flatMap(limits, (l) => {
          Tracing.caller(call.span, caller.identity)
          const release = acquire(caller, l.maxInFlightPerCaller)
          if (release === undefined) {
            return Effect.fail(CallError.overloaded(`too many calls in flight for this caller (limit ${l.maxInFlightPerCaller})`))
          }
          return dispatcher.prepare({
            requestId,
            operation: request.operation,
            input: request.input,
            identity: caller.identity,
            forwardedFor: Option.none(),
            timeout: timeoutOf(request.timeoutMs, l.maxCallTimeoutMs)
          }, "unary").pipe(
            Effect.flatMap((prepared) => {
              if (prepared._tag !== "Unary") return Effect.dieMessage("unreachable")
              if (expire === undefined) return prepared.run
              if (Option.isNone(prepared.deadline)) return prepared.handler
              const at = prepared.deadline.value
              // Interrupted by the deadline (not by a client that went away): TIMEOUT.
              return Effect.ensuring(prepared.handler, Effect.sync(expire(at))).pipe(
                Effect.onInterrupt(() =>
                  Effect.clockWith((clock) =>
                    Effect.sync(() => {
                      if (clock.unsafeCurrentTimeMillis() >= at) call.outcome.code = "TIMEOUT"
                    })
                  )
                )
              )
            }),
            Effect.ensuring(Effect.sync(release))
          )
        }))

    /** The metric and span name of a call: the operation's name when it is served here (else `(unknown)`). */
    const labelOf = (operation: string) => Served.labelOf(Operation.normalizeName(operation), (name) => source.lookup(name) !== undefined)

    const okBody = (requestId: string, output: unknown) => ({ request_id: requestId, result: "ok", output })

    const sseEvent = (event: string | undefined, data: string) =>
      event === undefined ? `data: ${data}\n\n` : `event: ${event}\ndata: ${data}\n\n`

    const respondSubscribe = (caller: Caller, request: CallRequest) =>
      Effect.gen(function*() {
        const l = yield* limits
        const requestId = crypto.randomUUID()
        // Observed until the request's scope closes: after the last event, or when the client went away (ABORTED).
        const call = yield* Served.servedScoped(labelOf(request.operation), caller.trace)
        const refuse = (error: CallError.CallError) => {
          Tracing.failed(call.outcome, error)
          return errorResponse(error, caller, request.operation, requestId)
        }
        Tracing.caller(call.span, caller.identity)
        const release = acquire(caller, l.maxInFlightPerCaller)
        if (release === undefined) {
          return refuse(CallError.overloaded(`too many calls in flight for this caller (limit ${l.maxInFlightPerCaller})`))
        }
        // Released when the request's scope closes: after the last event is written, or when the client went away.
        yield* Effect.addFinalizer(() => Effect.sync(release))
        // Anonymous subscriptions end at the operator's deadline, as on the wire.
        const timeout = timeoutOf(request.timeoutMs, l.maxCallTimeoutMs) ??
          (Option.isNone(caller.identity) ? Duration.millis(l.anonymousSubscriptionTimeoutMs) : undefined)
        const prepared = yield* Effect.either(dispatcher.prepare({
          requestId,
          operation: request.operation,
          input: request.input,
          identity: caller.identity,
          forwardedFor: Option.none(),
          timeout
        }, "streaming"))
        if (prepared._tag === "Left" || prepared.right._tag !== "Streaming") {
          return refuse(prepared._tag === "Left" ? prepared.left : CallError.internal("internal error"))
        }
        const items = prepared.right.run
        const events = (call.parent === undefined ? items : Stream.provideService(items, Tracer.ParentSpan, call.parent)).pipe(
          Stream.mapChunksEffect((items) => {
            let text = ""
            for (const item of items) {
              const json = stringify(item)
              // An item JSON cannot carry (a BigInt, a cycle) ends the stream with an error event.
              if (json === undefined) return Effect.fail(CallError.internal("internal error"))
              text += sseEvent(undefined, json)
            }
            return Effect.succeed(Chunk.of(encoder.encode(text)))
          }),
          Stream.concat(Stream.succeed(encoder.encode(sseEvent("completed", "{}")))),
          Stream.catchAll((error) => {
            Tracing.failed(call.outcome, error)
            return Stream.succeed(encoder.encode(sseEvent("error", JSON.stringify(error.toPayload()))))
          })
        )
        // A comment line while the stream is quiet keeps proxies from cutting it and finds a client that is gone.
        const body = Stream.merge(
          events,
          Stream.fromSchedule(Schedule.spaced(sseKeepAlive)).pipe(Stream.as(keepAliveBytes)),
          { haltStrategy: "left" }
        )
        return HttpServerResponse.stream(body, {
          contentType: "text/event-stream",
          headers: { "cache-control": "no-store", "x-accel-buffering": "no", "x-request-id": requestId }
        })
      })

    /** The External operations `identity` may call (all of them without an identity argument). */
    const callable = function*(identity: Option.Option<Identity> | undefined) {
      for (const registration of source.list()) {
        const spec = registration.spec
        if (spec.visibility !== "external") continue
        if (identity === undefined || Operation.check(spec.accessControl, identity) === undefined) yield spec
      }
    }

    /** Run a route with the caller resolved and the gateway's refusals answered. */
    const route = <R>(
      handle: (caller: Caller, incoming: Http.IncomingMessage) => Effect.Effect<HttpServerResponse.HttpServerResponse, Refusal, R>
    ) =>
      Effect.gen(function*() {
        const caller = yield* resolveCaller
        return yield* handle(caller, yield* incomingOf)
      }).pipe(Effect.catchTag("Refusal", (refusal) => Effect.succeed(refusalResponse(refusal))))

    const badRequest = (message: string) => new Refusal({ status: 400, code: "BAD_REQUEST", message })

    /** The call request of `POST /call` (envelope) or `POST /call/NAME` (the body is the input). */
    const callRequest = (prefix: string) => (incoming: Http.IncomingMessage): Effect.Effect<CallRequest, Refusal> => {
      const path = pathOf(incoming)
      if (path === prefix) {
        return Effect.flatMap(readJson(incoming, maxBodyBytes, maxBodyDepth), (body) => {
          const parsed = parseCallRequest(body, "request body")
          return typeof parsed === "string" ? Effect.fail(badRequest(parsed)) : Effect.succeed(parsed)
        })
      }
      let name: string
      try {
        name = decodeURIComponent(path.slice(prefix.length + 1))
      } catch {
        return Effect.fail(badRequest("the operation name in the path is not valid percent-encoding"))
      }
      const timeout = Number(searchParam(incoming, "timeout_ms") ?? NaN)
      return Effect.map(readJson(incoming, maxBodyBytes, maxBodyDepth, null), (input) => ({
        operation: name,
        input,
        timeoutMs: Number.isFinite(timeout) && timeout >= 0 ? timeout : undefined
      }))
    }

    const searchParam = (incoming: Http.IncomingMessage, name: string) => {
      const url = incoming.url ?? "/"
      const query = url.indexOf("?")
      return query < 0 ? null : new URLSearchParams(url.slice(query + 1)).get(name)
    }

    const subscribeRoute = route((caller, incoming) =>
      Effect.flatMap(callRequest("/subscribe")(incoming), (r) => respondSubscribe(caller, r))
    )

    const router = HttpRouter.empty.pipe(
      HttpRouter.get("/healthz", Effect.succeed(jsonResponse({ status: "ok" }, 200))),
      HttpRouter.get(
        "/metrics",
        route((caller) =>
          metricsPublic || Option.isSome(caller.identity)
            ? Effect.map(Prometheus.text, (text) =>
              HttpServerResponse.text(text, { contentType: Prometheus.CONTENT_TYPE, headers: jsonHeaders }))
            : Effect.succeed(errorResponse(CallError.forbidden("authentication required"), caller, undefined))
        )
      ),
      HttpRouter.post("/subscribe", subscribeRoute),
      HttpRouter.post("/subscribe/*", subscribeRoute),
      HttpRouter.post(
        "/batch",
        route((caller, incoming) =>
          Effect.gen(function*() {
            const body = yield* readJson(incoming, maxBodyBytes, maxBodyDepth)
            if (!Array.isArray(body)) return yield* badRequest(`request body must be a JSON array of {"operation", "input"}`)
            if (body.length > maxBatch) return yield* badRequest(`a batch has at most ${maxBatch} calls, this one ${body.length}`)
            const requests: Array<CallRequest> = []
            for (let i = 0; i < body.length; i++) {
              const parsed = parseCallRequest(body[i], `batch item ${i}`)
              if (typeof parsed === "string") return yield* badRequest(parsed)
              requests.push(parsed)
            }
            const results = yield* Effect.forEach(requests, (request) => {
              const requestId = crypto.randomUUID()
              return callOne(caller, request, requestId).pipe(
                Effect.match({
                  onSuccess: (output) => okBody(requestId, output),
                  onFailure: (error) => ({
                    request_id: requestId,
                    result: "error",
                    status: statusOf(error, caller.identity, declaredErrors(request.operation)),
                    error: error.toPayload()
                  })
                })
              )
            }, { concurrency: 16 })
            return jsonResponse({ results }, 200)
          })
        )
      ),
      HttpRouter.get(
        "/search",
        route((caller, incoming) =>
          Effect.sync(() => {
            const query = (searchParam(incoming, "query") ?? "").toLowerCase()
            const operations = []
            for (const { description, name, opType } of callable(caller.identity)) {
              if (query !== "" && !name.toLowerCase().includes(query) && !(description ?? "").toLowerCase().includes(query)) {
                continue
              }
              operations.push({ name, description: description ?? null, type: opType })
            }
            return jsonResponse({ operations }, 200)
          })
        )
      ),
      HttpRouter.get(
        "/schema",
        route((caller, incoming) => {
          const name = searchParam(incoming, "name")
          const request: CallRequest = { operation: "services/schema", input: name === null ? {} : { name }, timeoutMs: undefined }
          return callOne(caller, request, crypto.randomUUID()).pipe(
            Effect.map((spec) => jsonResponse(spec, 200)),
            Effect.catchAll((error) => Effect.succeed(errorResponse(error, caller, request.operation)))
          )
        })
      ),
      HttpRouter.get(
        "/openapi.json",
        route((caller) =>
          Effect.sync(() =>
            jsonResponse(
              ToOpenApi.document(source, {
                identity: caller.identity,
                ...(options.title === undefined ? {} : { title: options.title }),
                ...(options.version === undefined ? {} : { version: options.version })
              }),
              200
            )
          )
        )
      )
    )

    const app = router.pipe(
      Effect.catchTag("RouteNotFound", () =>
        Effect.map(HttpServerRequest.HttpServerRequest, (request) =>
          refusalResponse(
            new Refusal({
              status: 404,
              code: "NOT_FOUND",
              message: `no such endpoint: ${request.method} ${CallError.echo(new URL(request.url, "http://gateway").pathname)}`
            })
          )))
    )

    // Every request fiber joins the gateway's set, so closing the scope interrupts what is still running.
    const fibers = yield* FiberSet.make<any, any>()
    const tracked: typeof app = Effect.withFiberRuntime((fiber) => {
      FiberSet.unsafeAdd(fibers, fiber)
      return app
    })
    // A span per request only when asked for: the platform's tracing middleware costs ~15% of a call's CPU.
    const handler = yield* Effect.locally(
      NodeHttpServer.makeHandler(tracked),
      HttpMiddleware.currentTracerDisabledWhen,
      options.tracing === true ? () => false : () => true
    )
    const runFork = yield* FiberSet.runtime(fibers)<never>()

    const writeJson = (response: Http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
      if (response.headersSent) return response.destroy()
      const text = stringify(body) ?? JSON.stringify(CallError.internal("internal error").toPayload())
      response.writeHead(status, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(text),
        ...jsonHeaders,
        ...headers
      })
      response.end(text)
    }
    const writeRefusal = (response: Http.ServerResponse, refusal: Refusal) =>
      writeJson(response, refusal.status, { code: refusal.code, message: refusal.message, retryable: refusal.status === 429 }, refusal.headers)
    const writeDefect = (response: Http.ServerResponse, what: string) => (cause: unknown) =>
      Effect.zipRight(
        Effect.logError(`${what} failed`, cause),
        Effect.sync(() => writeJson(response, 500, CallError.internal("internal error").toPayload()))
      )

    /**
     * `POST /call` and `POST /call/NAME`, the hot path, without the platform's per-request machinery (it doubles a
     * call's CPU): the same steps as every route (admission, caller, body, dispatch), answered on the response directly.
     * A client that goes away interrupts the call.
     */
    const fastCall = (request: Http.IncomingMessage, response: Http.ServerResponse) => {
      const requestId = crypto.randomUUID()
      let timedOut = false
      const expire = (at: number) =>
        deadlines.add(at, () => {
          timedOut = true
          fiber.unsafeInterruptAsFork(FiberId.none)
        })
      const fiber = runFork(
        callerOf(request).pipe(
          Effect.flatMap((caller) =>
            Effect.flatMap(callRequest("/call")(request), (call) => {
              return Effect.match(callOne(caller, call, requestId, expire), {
                onSuccess: (output) => writeJson(response, 200, okBody(requestId, output), { "x-request-id": requestId }),
                onFailure: (error) => {
                  const status = statusOf(error, caller.identity, declaredErrors(call.operation))
                  writeJson(response, status, error.toPayload(), { ...errorHeaders(error, status), "x-request-id": requestId })
                }
              })
            })
          ),
          Effect.catchTag("Refusal", (refusal) => Effect.sync(() => writeRefusal(response, refusal))),
          Effect.catchAllCause(writeDefect(response, "HTTP call"))
        )
      )
      // Past its deadline the call was interrupted (the handler with it): TIMEOUT.
      fiber.addObserver(() => {
        if (timedOut && !response.headersSent) {
          writeJson(response, 504, CallError.timeout().toPayload(), { "x-request-id": requestId })
        }
      })
      response.on("close", () => {
        if (!response.writableEnded) fiber.unsafeInterruptAsFork(FiberId.none)
      })
    }
    const isCall = (path: string) => path === "/call" || path.startsWith("/call/")

    if (options.mcp === undefined || options.mcp === false) {
      return {
        handler: (request, response) => {
          if (request.method === "POST" && isCall(pathOf(request))) fastCall(request, response)
          else handler(request, response)
        }
      }
    }

    // MCP (Streamable HTTP, with sessions; every request is authenticated like any other).
    const mcp = options.mcp === true ? {} : options.mcp
    const [ToMcp, { StreamableHTTPServerTransport }] = yield* Effect.promise(() =>
      Promise.all([import("../../peer/ToMcp.js"), import("@modelcontextprotocol/sdk/server/streamableHttp.js")])
    )
    /** One call for the MCP server: a fiber of the gateway, interrupted when the SDK aborts the request. */
    const callFor = (caller: Caller) =>
    (operation: string, input: unknown, signal: AbortSignal, meta?: Record<string, unknown>): Promise<ToMcpOutcome> => {
      // A tool call's `_meta.traceparent` (MCP's trace context) wins over the HTTP request's header.
      const trace = (meta === undefined ? undefined : Tracing.parse(meta.traceparent, meta.tracestate)) ?? caller.trace
      const fiber = runFork(callOne({ ...caller, trace }, { operation, input, timeoutMs: undefined }, crypto.randomUUID()).pipe(
        Effect.match({
          onSuccess: (output): ToMcpOutcome => ({ ok: true, output }),
          onFailure: (error): ToMcpOutcome => ({ ok: false, error: error.toPayload() })
        })
      ))
      const abort = () => fiber.unsafeInterruptAsFork(FiberId.none)
      if (signal.aborted) abort()
      else signal.addEventListener("abort", abort, { once: true })
      return Effect.runPromise(Fiber.join(fiber)).finally(() => signal.removeEventListener("abort", abort))
    }
    const callerKey = (caller: Caller) =>
      Option.isSome(caller.identity) ? `id:${caller.identity.value.id}` : `anonymous:${caller.remote.host}`
    const mcpOptions = { mode: mcp.mode ?? "operations", maxBatch, name: options.title ?? "alknet", version: options.version ?? "0.1.0" } as const
    /** The backend for one request: its caller, as the gateway resolved it (carried in the SDK's `authInfo`). */
    const backendOf = (extra: { readonly authInfo?: { readonly extra?: Record<string, unknown> } }): ToMcpBackend => {
      const caller = extra.authInfo?.extra?.caller as Caller | undefined
      // Unreachable (every request passes through serveMcp, which sets it); nobody, to fail closed.
      const who = caller ?? { identity: Option.none(), remote: { host: "", port: 0 }, trace: undefined }
      return { operations: () => callable(who.identity), external: () => callable(undefined), call: callFor(who) }
    }

    // Sessions (Streamable HTTP's `mcp-session-id`): one SDK server and transport per session, owned by the caller that
    // initialized it; a request whose caller is not the owner does not find it. Bounded in number; idle ones expire.
    interface Session {
      readonly transport: InstanceType<typeof StreamableHTTPServerTransport>
      readonly owner: string
      lastUsed: number
    }
    const sessions = new Map<string, Session>()
    const maxSessions = mcp.maxSessions ?? 1024
    const idleMs = Duration.toMillis(Duration.decode(mcp.idleTimeout ?? "10 minutes"))
    const closeSession = (id: string) => {
      const session = sessions.get(id)
      if (session === undefined) return
      sessions.delete(id)
      void session.transport.close()
    }
    yield* Effect.addFinalizer(() => Effect.sync(() => [...sessions.keys()].forEach(closeSession)))

    const jsonRpcError = (response: Http.ServerResponse, status: number, message: string, headers: Record<string, string> = {}) =>
      writeJson(response, status, { jsonrpc: "2.0", error: { code: -32000, message }, id: null }, headers)

    /** A client that drops its request's connection cancels the requests in it, as `notifications/cancelled` would. */
    const cancelOnDisconnect = (
      transport: InstanceType<typeof StreamableHTTPServerTransport>,
      response: Http.ServerResponse,
      body: unknown
    ) => {
      const ids = (Array.isArray(body) ? body : [body]).flatMap((m) =>
        isRecord(m) && typeof m.method === "string" && (typeof m.id === "string" || typeof m.id === "number") ? [m.id] : []
      )
      if (ids.length === 0) return
      response.on("close", () => {
        if (response.writableFinished) return
        for (const requestId of ids) {
          transport.onmessage?.({ jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId, reason: "client disconnected" } })
        }
      })
    }

    const serveMcp = (request: Http.IncomingMessage, response: Http.ServerResponse) =>
      Effect.gen(function*() {
        const caller = yield* callerOf(request)
        // The JSON-RPC envelope (`params.arguments.input`) wraps the input in up to four levels.
        const body = request.method === "POST" ? yield* readJson(request, maxBodyBytes, maxInputDepth + 4) : undefined
        // What each handler reads its caller from (the SDK passes `req.auth` on as `authInfo`).
        ;(request as Http.IncomingMessage & { auth?: unknown }).auth = { token: "", clientId: callerKey(caller), scopes: [], extra: { caller } }
        const now = yield* Clock.currentTimeMillis
        const id = request.headers["mcp-session-id"]
        if (typeof id === "string") {
          const session = sessions.get(id)
          if (session === undefined || session.owner !== callerKey(caller)) return jsonRpcError(response, 404, "session not found")
          session.lastUsed = now
          cancelOnDisconnect(session.transport, response, body)
          return yield* Effect.promise(() => session.transport.handleRequest(request, response, body))
        }
        if (request.method !== "POST") return jsonRpcError(response, 400, "missing mcp-session-id: initialize first")
        for (const [sessionId, session] of sessions) if (now - session.lastUsed > idleMs) closeSession(sessionId)
        if (sessions.size >= maxSessions) {
          return jsonRpcError(response, 503, `too many MCP sessions (limit ${maxSessions})`, { "retry-after": "1" })
        }
        // A new session: the transport accepts only an initialize without a session id.
        const server = ToMcp.makeServer(backendOf, mcpOptions)
        const transport: InstanceType<typeof StreamableHTTPServerTransport> = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => crypto.randomUUID(),
          enableJsonResponse: true,
          onsessioninitialized: (sessionId) => void sessions.set(sessionId, { transport, owner: callerKey(caller), lastUsed: now }),
          onsessionclosed: (sessionId) => void sessions.delete(sessionId)
        })
        transport.onclose = () => {
          if (transport.sessionId !== undefined) sessions.delete(transport.sessionId)
          void server.close()
        }
        yield* Effect.promise(() => server.connect(transport))
        yield* Effect.promise(() => transport.handleRequest(request, response, body))
        // Not an initialize (or a failed one): nothing to keep.
        if (transport.sessionId === undefined || !sessions.has(transport.sessionId)) void transport.close()
      }).pipe(
        Effect.catchTag("Refusal", (refusal) => Effect.sync(() => writeRefusal(response, refusal))),
        Effect.catchAllCause(writeDefect(response, "MCP request"))
      )
    return {
      handler: (request, response) => {
        const path = pathOf(request)
        if (path === "/mcp") runFork(serveMcp(request, response))
        else if (request.method === "POST" && isCall(path)) fastCall(request, response)
        else handler(request, response)
      }
    }
  })
