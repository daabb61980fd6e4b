/**
 * `to_openapi` (SPEC §14): the OpenAPI 3.1 document of the HTTP gateway, for one caller.
 *
 * Beside the generic routes (`/call`, `/batch`, `/subscribe`, `/search`, `/schema`, `/healthz`), every External
 * operation the caller may call gets its own typed path, so a generated client is typed per operation:
 *
 * - a query or mutation: `POST /call/NAMESPACE/OP`, the request body is its input schema, the 200 answer
 *   `{request_id, result, output}` with its output schema, and a response per declared error (`http_status`, else
 *   500) besides the protocol ones;
 * - a subscription: `POST /subscribe/NAMESPACE/OP`, answered `text/event-stream`; the item schema is given as
 *   `x-alknet-item-schema` on the media type (OpenAPI 3.1 has no item schema for event streams).
 *
 * What the caller may not call is left out (as `services/list` does: existence is not leaked). JSON Schemas come from
 * the operations' Effect Schemas; two things would make the document invalid or wrong and are fixed here: every
 * `$id` is removed (Effect emits `$id: "/schemas/unknown"` for each `Schema.Unknown`, and duplicate `$id`s are an
 * error in 3.1), and each schema's `$defs` are moved to `components/schemas` with their `$ref`s rewritten (a
 * `#/$defs/X` inside a path would otherwise resolve against the document root). Two operations defining the same
 * name differently get distinct component names.
 */
import { Option } from "effect"
import type { OperationSource } from "../call/Dispatcher.js"
import type { Identity } from "../schema/Identity.js"
import { isObject, type JsonObject, withoutIds } from "../schema/JsonSchema.js"
import * as Operation from "../services/Operation.js"

export interface Options {
  /** Who the document is for: only what it may call is described (default: anonymous). */
  readonly identity?: Option.Option<Identity>
  readonly title?: string
  readonly version?: string
  /** `servers[].url`, when known. */
  readonly serverUrl?: string
  /**
   * Describe every External operation of `source` whatever its access control: for a source that is already what one
   * caller may call (e.g. imported with `from_call` under that caller's identity).
   */
  readonly all?: boolean
}

/** A copy of `schema` without `$id`s and with `#/$defs/X` refs renamed through `rename` into the components. */
const rewrite = (schema: unknown, rename: (name: string) => string): unknown =>
  withoutIds(schema, (name) => `#/components/schemas/${rename(name)}`)

const componentName = (name: string) => name.replace(/[^A-Za-z0-9._-]/g, "_") || "Schema"

/** Collects component schemas; hoists each schema's `$defs` into them. */
const makeComponents = (reserved: JsonObject) => {
  const schemas: JsonObject = { ...reserved }
  const serialized = new Map<string, string>(Object.entries(schemas).map(([k, v]) => [k, JSON.stringify(v)]))
  const hoist = (schema: unknown): unknown => {
    if (!isObject(schema)) return {}
    const { $defs, ...rest } = schema
    const defs = isObject($defs) ? $defs : {}
    // First pick a component name per definition, then rewrite each with those names.
    const names = new Map<string, string>()
    const pending: Array<[string, unknown]> = []
    for (const [name, def] of Object.entries(defs)) {
      const candidate = rewrite(def, (n) => componentName(n))
      const json = JSON.stringify(candidate)
      let chosen = componentName(name)
      for (let i = 2; serialized.has(chosen) && serialized.get(chosen) !== json; i++) chosen = `${componentName(name)}_${i}`
      names.set(name, chosen)
      pending.push([name, def])
    }
    const rename = (name: string) => names.get(name) ?? componentName(name)
    for (const [name, def] of pending) {
      const chosen = names.get(name)!
      if (serialized.has(chosen)) continue
      const rewritten = rewrite(def, rename)
      schemas[chosen] = rewritten
      serialized.set(chosen, JSON.stringify(rewritten))
    }
    return rewrite(rest, rename)
  }
  return { schemas, hoist }
}

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` })

const CallErrorSchema = {
  type: "object",
  required: ["code", "message", "retryable"],
  properties: {
    code: { type: "string", description: "NOT_FOUND, FORBIDDEN, INVALID_INPUT, INVALID_OPERATION_TYPE, INTERNAL, TIMEOUT, OVERLOADED, a declared domain code, or a gateway refusal (BAD_REQUEST, PAYLOAD_TOO_LARGE, TOO_MANY_REQUESTS)" },
    message: { type: "string" },
    retryable: { type: "boolean" },
    details: {}
  }
}

const CallRequestSchema = {
  type: "object",
  required: ["operation"],
  properties: {
    operation: { type: "string", description: "namespace/op" },
    input: {},
    timeout_ms: { type: "number", minimum: 0, description: "deadline in ms (capped by the node)" }
  }
}

const callResult = (output: unknown) => ({
  type: "object",
  required: ["request_id", "result", "output"],
  properties: { request_id: { type: "string", format: "uuid" }, result: { const: "ok" }, output }
})

const errorResponse = (description: string) => ({
  description,
  content: { "application/json": { schema: ref("CallError") } }
})

/** The responses every call may give besides its own declared errors. */
const protocolResponses = {
  "400": errorResponse("BAD_REQUEST (malformed body) or INVALID_OPERATION_TYPE"),
  "401": errorResponse("FORBIDDEN without an identity: authentication required"),
  "403": errorResponse("FORBIDDEN: the caller lacks a scope or resource"),
  "404": errorResponse("NOT_FOUND"),
  "413": errorResponse("PAYLOAD_TOO_LARGE"),
  "422": errorResponse("INVALID_INPUT"),
  "429": errorResponse("TOO_MANY_REQUESTS: the address is cooling down after failed authentications"),
  "500": errorResponse("INTERNAL"),
  "503": errorResponse("OVERLOADED (retryable)"),
  "504": errorResponse("TIMEOUT (retryable)")
}

const jsonBody = (schema: unknown, required = true) => ({ required, content: { "application/json": { schema } } })

/** Generic routes of the gateway. */
const genericPaths = (): JsonObject => ({
  "/call": {
    post: {
      operationId: "call",
      summary: "Call a query or mutation by name",
      requestBody: jsonBody(ref("CallRequest")),
      responses: {
        "200": { description: "the output", content: { "application/json": { schema: ref("CallResult") } } },
        ...protocolResponses
      }
    }
  },
  "/batch": {
    post: {
      operationId: "batch",
      summary: "Several calls; each result is ok or an error",
      requestBody: jsonBody({ type: "array", items: ref("CallRequest") }),
      responses: {
        "200": {
          description: "one result per call, in order",
          content: {
            "application/json": {
              schema: {
                type: "object",
                required: ["results"],
                properties: {
                  results: {
                    type: "array",
                    items: {
                      oneOf: [
                        ref("CallResult"),
                        {
                          type: "object",
                          required: ["request_id", "result", "status", "error"],
                          properties: {
                            request_id: { type: "string" },
                            result: { const: "error" },
                            status: { type: "integer" },
                            error: ref("CallError")
                          }
                        }
                      ]
                    }
                  }
                }
              }
            }
          }
        },
        "400": errorResponse("BAD_REQUEST"),
        "413": errorResponse("PAYLOAD_TOO_LARGE"),
        "429": errorResponse("TOO_MANY_REQUESTS")
      }
    }
  },
  "/subscribe": {
    post: {
      operationId: "subscribe",
      summary: "Subscribe by name: Server-Sent Events, `data:` per item, `event: error`, `event: completed`",
      requestBody: jsonBody(ref("CallRequest")),
      responses: {
        "200": { description: "the items as Server-Sent Events", content: { "text/event-stream": { schema: { type: "string" } } } },
        ...protocolResponses
      }
    }
  },
  "/search": {
    get: {
      operationId: "search",
      summary: "External operations the caller may call",
      parameters: [{ name: "query", in: "query", required: false, schema: { type: "string" } }],
      responses: {
        "200": {
          description: "matching operations",
          content: {
            "application/json": {
              schema: {
                type: "object",
                required: ["operations"],
                properties: {
                  operations: {
                    type: "array",
                    items: {
                      type: "object",
                      required: ["name", "description", "type"],
                      properties: {
                        name: { type: "string" },
                        description: { type: ["string", "null"] },
                        type: { enum: ["query", "mutation", "subscription"] }
                      }
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
  },
  "/schema": {
    get: {
      operationId: "schema",
      summary: "The spec of an operation the caller may call (services/schema)",
      parameters: [{ name: "name", in: "query", required: true, schema: { type: "string" } }],
      responses: {
        "200": { description: "the spec, snake_case", content: { "application/json": { schema: { type: "object" } } } },
        ...protocolResponses
      }
    }
  },
  "/healthz": {
    get: {
      operationId: "healthz",
      summary: "Liveness, unauthenticated",
      security: [],
      responses: {
        "200": {
          description: "up",
          content: { "application/json": { schema: { type: "object", properties: { status: { const: "ok" } } } } }
        }
      }
    }
  }
})

const operationId = (prefix: string, name: string) => `${prefix}_${name.replace(/[^A-Za-z0-9]+/g, "_")}`

/** The OpenAPI 3.1 document of what `options.identity` may call through the gateway over `source`. */
export const document = (source: OperationSource, options: Options = {}): JsonObject => {
  const identity = options.identity ?? Option.none()
  const components = makeComponents({
    CallError: CallErrorSchema,
    CallRequest: CallRequestSchema,
    CallResult: callResult({})
  })
  const paths = genericPaths()
  const usedIds = new Set<string>(["call", "batch", "subscribe", "search", "schema", "healthz"])
  for (const registration of source.list()) {
    const spec = registration.spec
    if (spec.visibility !== "external") continue
    if (options.all !== true && Operation.check(spec.accessControl, identity) !== undefined) continue
    const streaming = spec.opType === "subscription"
    const path = `/${streaming ? "subscribe" : "call"}/${spec.name.split("/").map(encodeURIComponent).join("/")}`
    let id = operationId(streaming ? "subscribe" : "call", spec.name)
    for (let i = 2; usedIds.has(id); i++) id = `${operationId(streaming ? "subscribe" : "call", spec.name)}_${i}`
    usedIds.add(id)
    const input = components.hoist(spec.inputJsonSchema)
    const output = components.hoist(spec.outputJsonSchema)
    const responses: JsonObject = { ...protocolResponses }
    const errorSchemas = Operation.specToJson(spec).error_schemas
    spec.errors.forEach((declared, i) => {
      const status = String(
        declared.httpStatus !== undefined && declared.httpStatus >= 400 && declared.httpStatus <= 599 ? declared.httpStatus : 500
      )
      const detailsSchema = errorSchemas[i]!.schema
      const schema = {
        allOf: [ref("CallError")],
        properties: { code: { const: declared.code }, ...(detailsSchema === null ? {} : { details: components.hoist(detailsSchema) }) }
      }
      const existing = responses[status] as { readonly description: string; readonly content: Record<string, { readonly schema: unknown }> } | undefined
      const description = `${declared.code}: ${declared.description}`
      responses[status] = existing === undefined
        ? { description, content: { "application/json": { schema } } }
        : {
          description: `${existing.description}; or ${description}`,
          content: { "application/json": { schema: { anyOf: [existing.content["application/json"]!.schema, schema] } } }
        }
    })
    paths[path] = {
      post: {
        operationId: id,
        summary: spec.name,
        ...(spec.description === undefined ? {} : { description: spec.description }),
        tags: [spec.namespace],
        "x-alknet-op-type": spec.opType,
        requestBody: jsonBody(input, false),
        responses: {
          "200": streaming
            ? {
              description: "the items as Server-Sent Events: `data: <item JSON>`, `event: error`, `event: completed`",
              content: { "text/event-stream": { schema: { type: "string" }, "x-alknet-item-schema": output } }
            }
            : { description: "the output", content: { "application/json": { schema: callResult(output) } } },
          ...responses
        }
      }
    }
  }
  return {
    openapi: "3.1.0",
    info: { title: options.title ?? "alknet node", version: options.version ?? "0.1.0" },
    ...(options.serverUrl === undefined ? {} : { servers: [{ url: options.serverUrl }] }),
    security: [{ bearer: [] }, {}],
    paths,
    components: {
      schemas: components.schemas,
      securitySchemes: { bearer: { type: "http", scheme: "bearer", description: "an alknet token (alk_…) or a peer's token" } }
    }
  }
}
