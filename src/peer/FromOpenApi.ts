/**
 * `from_openapi` (SPEC §14): import a REST API's operations from its OpenAPI document (JSON or YAML, 3.0 or 3.1,
 * local `$ref`s) as operations this node can compose and re-export.
 *
 * Each path × method becomes `${namespace}/${name}`, `name` = `operationId`, else `${method}_${static path segments}`
 * (`get /pets/{id}` → `get_pets`):
 * - a `text/event-stream` success response → subscription (each `data:` line parsed as JSON is an item);
 * - else GET → query, any other method → mutation;
 * - input: an object with one property per path / query / header parameter and `body` (the JSON request body);
 *   path parameters go into the path, query parameters into the query string, header parameters into headers;
 * - output: the JSON success response (text when it is not JSON);
 * - every documented non-2xx response is a declared error `HTTP_<status>` (its `http_status` the same), with
 *   `{status, body}` as details; an undocumented one is `HTTP_<status>` too (the dispatcher makes it INTERNAL with the
 *   code in details, as for any undeclared code).
 *
 * Credentials come from the registration's capabilities, never from config in clear: `credential` says how to present
 * the secret (`Authorization: Bearer`, a named header such as `X-API-Key`, or HTTP Basic `user:password`), and the
 * secret itself is a `Redacted` capability of each imported registration. Registrations are provenance `FromOpenAPI`,
 * leaves, Internal unless re-exported with an `access` control (the API is called with the node's credential).
 * Interrupting a call (an abort, its deadline) aborts its HTTP request.
 */
import { Chunk, Effect, Option, Redacted, Schema, Stream } from "effect"
import * as Yaml from "yaml"
import * as AdapterError from "../errors/AdapterError.js"
import * as CallError from "../errors/CallError.js"
import * as Tracing from "../observability/Tracing.js"
import * as Json from "../schema/Json.js"
import { isObject, type JsonObject } from "../schema/JsonSchema.js"
import * as Operation from "../services/Operation.js"
import type { OperationAdapter } from "../services/OperationAdapter.js"

/** How the secret is presented. */
export type Credential =
  | { readonly type: "bearer"; readonly secret: Redacted.Redacted<string> }
  | { readonly type: "header"; readonly header: string; readonly secret: Redacted.Redacted<string> }
  | { readonly type: "basic"; readonly secret: Redacted.Redacted<string> } // "user:password"

/** The capability name the secret is kept under in each imported registration. */
export const CREDENTIAL_CAPABILITY = "openapi/credential"

export type FromOpenApiOptions =
  & {
    /** Registered as `${namespace}/${name}`. */
    readonly namespace: string
    /** The API's base URL (default: the document's first `servers` URL, resolved against `documentUrl`). */
    readonly baseUrl?: string
    /** Where the document came from, to resolve a relative server URL. */
    readonly documentUrl?: string
    readonly credential?: Credential
  }
  & (
    | { readonly visibility?: "internal" }
    | { readonly visibility: "external"; readonly access: Operation.AccessControlInput }
  )

const METHODS = ["get", "put", "post", "delete", "patch", "head", "options"] as const

/** Parse a document's text: JSON, else YAML. */
export const parse = (text: string): Effect.Effect<JsonObject, AdapterError.AdapterError> =>
  Effect.suspend(() => {
    let value: unknown
    try {
      value = text.trimStart().startsWith("{") ? JSON.parse(text) : Yaml.parse(text, { maxAliasCount: 100 })
    } catch (error) {
      return Effect.fail(AdapterError.make("SchemaParse", `not an OpenAPI document (JSON or YAML): ${(error as Error).message}`))
    }
    if (!isObject(value) || (typeof value.openapi !== "string" && typeof value.swagger !== "string")) {
      return Effect.fail(AdapterError.make("SchemaParse", "not an OpenAPI document: no openapi version"))
    }
    if (Json.exceedsDepth(value, 256)) return Effect.fail(AdapterError.make("SchemaParse", Json.tooDeep("the OpenAPI document", 256)))
    return Effect.succeed(value)
  })

/** Resolve a local `$ref` (`#/components/...`); anything else is SchemaParse. */
const resolver = (document: JsonObject) => {
  const resolve = (value: unknown, depth = 0): unknown => {
    if (!isObject(value) || typeof value.$ref !== "string") return value
    if (depth > 32) throw new Error(`$ref chain too long at ${value.$ref}`)
    const ref = value.$ref
    if (!ref.startsWith("#/")) throw new Error(`only local $refs are supported, not ${ref}`)
    let node: unknown = document
    for (const part of ref.slice(2).split("/")) {
      const key = decodeURIComponent(part).replace(/~1/g, "/").replace(/~0/g, "~")
      node = isObject(node) ? node[key] : undefined
    }
    if (node === undefined) throw new Error(`unresolved $ref ${ref}`)
    return resolve(node, depth + 1)
  }
  return resolve
}

/** A schema for publishing: `#/components/schemas/X` refs become `#/$defs/X`, with the components as `$defs`. */
const publishable = (schema: unknown, components: JsonObject): JsonObject => {
  const rewrite = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(rewrite)
    if (!isObject(value)) return value
    const out: JsonObject = {}
    for (const [key, sub] of Object.entries(value)) {
      out[key] = key === "$ref" && typeof sub === "string" && sub.startsWith("#/components/schemas/")
        ? `#/$defs/${sub.slice("#/components/schemas/".length)}`
        : rewrite(sub)
    }
    return out
  }
  const root = isObject(schema) ? rewrite(schema) as JsonObject : {}
  return JSON.stringify(root).includes(`"#/$defs/`) && Object.keys(components).length > 0
    ? { ...root, $defs: rewrite(components) }
    : root
}

interface Parameter {
  readonly name: string
  readonly in: "path" | "query" | "header"
  readonly required: boolean
  readonly schema: unknown
}

interface Route {
  readonly method: string
  readonly path: string
  readonly parameters: ReadonlyArray<Parameter>
  readonly hasBody: boolean
  readonly streaming: boolean
}

const isSuccess = (status: string) => /^2\d\d$/.test(status) || status === "2XX"

const segmentsName = (method: string, path: string) => {
  const statics = path.split("/").filter((s) => s !== "" && !s.startsWith("{"))
  return [method, ...statics].join("_").replace(/[^A-Za-z0-9_.-]/g, "_")
}

/** The request for one call. */
const request = (baseUrl: string, route: Route, input: JsonObject, credential: Option.Option<Credential>) => {
  let path = route.path
  const query = new URLSearchParams()
  const headers: Record<string, string> = { accept: route.streaming ? "text/event-stream" : "application/json" }
  for (const p of route.parameters) {
    const value = input[p.name]
    if (value === undefined || value === null) {
      if (p.required) return CallError.invalidInput(`missing required field: ${CallError.echo(p.name)}`)
      continue
    }
    const text = typeof value === "string" ? value : JSON.stringify(value)
    if (p.in === "path") path = path.replace(`{${p.name}}`, encodeURIComponent(text))
    else if (p.in === "query") query.append(p.name, text)
    else headers[p.name.toLowerCase()] = text
  }
  if (Option.isSome(credential)) {
    const c = credential.value
    const secret = Redacted.value(c.secret)
    if (c.type === "bearer") headers.authorization = `Bearer ${secret}`
    else if (c.type === "basic") headers.authorization = `Basic ${Buffer.from(secret).toString("base64")}`
    else headers[c.header.toLowerCase()] = secret
  }
  const body = route.hasBody && input.body !== undefined ? JSON.stringify(input.body) : undefined
  if (body !== undefined) headers["content-type"] = "application/json"
  const qs = query.toString()
  return {
    url: `${baseUrl.replace(/\/+$/, "")}${path}${qs === "" ? "" : `?${qs}`}`,
    init: { method: route.method.toUpperCase(), headers, ...(body === undefined ? {} : { body }) }
  }
}

const readBody = async (response: Response): Promise<unknown> => {
  const text = await response.text()
  if (!(response.headers.get("content-type") ?? "").includes("json")) return text
  try {
    const value: unknown = JSON.parse(text)
    return Json.exceedsDepth(value) ? text : value
  } catch {
    return text
  }
}

const httpError = (response: Response, body: unknown) =>
  CallError.domain(`HTTP_${response.status}`, `HTTP ${response.status}${response.statusText === "" ? "" : ` ${response.statusText}`}`, {
    status: response.status,
    body
  })

const transportError = (url: string) => (error: unknown) =>
  CallError.internal(`request to ${url.replace(/\?.*$/, "")} failed: ${error instanceof Error ? error.message : String(error)}`)

/** Server-Sent Events → items: each event's `data:` lines, joined, parsed as JSON (text when not JSON). */
const events = (body: ReadableStream<Uint8Array>, url: string): Stream.Stream<unknown, CallError.CallError> => {
  const decoder = new TextDecoder()
  let buffer = ""
  return Stream.fromReadableStream(() => body, transportError(url)).pipe(
    Stream.mapChunks((chunks) => {
      const items: Array<unknown> = []
      for (const chunk of chunks) {
        buffer += decoder.decode(chunk, { stream: true }).replace(/\r\n/g, "\n")
        let end: number
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, ""))
          if (data.length === 0) continue
          const text = data.join("\n")
          try {
            const value: unknown = JSON.parse(text)
            items.push(Json.exceedsDepth(value) ? text : value)
          } catch {
            items.push(text)
          }
        }
      }
      return Chunk.unsafeFromArray(items)
    })
  )
}

const handlerOf = (baseUrl: string, route: Route): Operation.Handler => {
  const prepare = (input: unknown, ctx: Operation.OperationContext) => {
    if (input !== null && !isObject(input)) return CallError.invalidInput("invalid input: expected an object of parameters and body")
    const credential = Option.map(Operation.capability(ctx, CREDENTIAL_CAPABILITY), (c) => Redacted.value(c) as Credential)
    return request(baseUrl, route, input ?? {}, credential)
  }
  if (route.streaming) {
    return {
      _tag: "Streaming",
      run: (input, ctx) => {
        const built = prepare(input, ctx)
        if (built instanceof CallError.CallError) return Stream.fail(built)
        return Stream.unwrapScoped(Effect.gen(function*() {
          // The request continues the caller's trace (a client span when tracing is on).
          const span = yield* Tracing.aroundScoped(ctx.operation)
          if (span !== undefined) Tracing.inject(built.init.headers, span)
          // Aborted when the subscription ends or is interrupted: the HTTP request goes with it.
          const controller = yield* Effect.acquireRelease(Effect.sync(() => new AbortController()), (c) => Effect.sync(() => c.abort()))
          const response = yield* Effect.tryPromise({
            try: () => fetch(built.url, { ...built.init, signal: controller.signal }),
            catch: transportError(built.url)
          })
          if (!response.ok || response.body === null) {
            const body = yield* Effect.promise(() => readBody(response).catch(() => null))
            return Stream.fail(httpError(response, body))
          }
          return events(response.body, built.url)
        }))
      }
    }
  }
  return {
    _tag: "Unary",
    run: (input, ctx) => {
      const built = prepare(input, ctx)
      if (built instanceof CallError.CallError) return Effect.fail(built)
      return Tracing.around(ctx.operation, "client", (span) => {
        if (span !== undefined) Tracing.inject(built.init.headers, span)
        return Effect.tryPromise({
          try: async (signal) => {
            const response = await fetch(built.url, { ...built.init, signal })
            return { response, body: await readBody(response) }
          },
          catch: transportError(built.url)
        })
      }).pipe(Effect.flatMap(({ body, response }) => (response.ok ? Effect.succeed(body) : Effect.fail(httpError(response, body)))))
    }
  }
}

/** `from_openapi(document, options)`: an adapter importing the document's operations. */
export const fromOpenApi = (document: JsonObject, options: FromOpenApiOptions): OperationAdapter => ({
  description: `from_openapi ${options.namespace}`,
  import: () =>
    Effect.try({
      try: () => {
        const resolve = resolver(document)
        const components = isObject(document.components) && isObject(document.components.schemas) ? document.components.schemas : {}
        const servers = Array.isArray(document.servers) ? document.servers : []
        const server = isObject(servers[0]) && typeof servers[0].url === "string" ? servers[0].url : undefined
        const baseUrl = options.baseUrl ?? (server === undefined ? undefined : new URL(server, options.documentUrl).toString())
        if (baseUrl === undefined) throw new Error("no baseUrl given and the document names no server")
        const registrations: Array<Operation.HandlerRegistration> = []
        const seen = new Set<string>()
        const paths = isObject(document.paths) ? document.paths : {}
        for (const [path, rawItem] of Object.entries(paths)) {
          const item = resolve(rawItem)
          if (!isObject(item)) continue
          for (const method of METHODS) {
            const op = item[method]
            if (!isObject(op)) continue
            // Parameters: the path item's, overridden by the operation's (same name and location).
            const byKey = new Map<string, Parameter>()
            for (const raw of [...(Array.isArray(item.parameters) ? item.parameters : []), ...(Array.isArray(op.parameters) ? op.parameters : [])]) {
              const p = resolve(raw)
              if (!isObject(p) || typeof p.name !== "string" || (p.in !== "path" && p.in !== "query" && p.in !== "header")) continue
              byKey.set(`${p.in}:${p.name}`, { name: p.name, in: p.in, required: p.required === true || p.in === "path", schema: p.schema ?? {} })
            }
            const parameters = [...byKey.values()]
            const requestBody = resolve(op.requestBody)
            const bodySchema = isObject(requestBody) && isObject(requestBody.content) && isObject(requestBody.content["application/json"])
              ? (requestBody.content["application/json"] as JsonObject).schema ?? {}
              : undefined
            const responses = isObject(op.responses) ? op.responses : {}
            let streaming = false
            let output: unknown = {}
            const errors: Array<Operation.ErrorDefinition> = []
            for (const [status, rawResponse] of Object.entries(responses)) {
              const response = resolve(rawResponse)
              const content = isObject(response) && isObject(response.content) ? response.content : {}
              if (isSuccess(status)) {
                if (isObject(content["text/event-stream"])) streaming = true
                else if (isObject(content["application/json"])) output = (content["application/json"] as JsonObject).schema ?? {}
              } else if (/^[45]\d\d$/.test(status)) {
                errors.push(Operation.error({
                  code: `HTTP_${status}`,
                  description: isObject(response) && typeof response.description === "string" ? response.description : `HTTP ${status}`,
                  httpStatus: Number(status)
                }))
              }
            }
            const opName = typeof op.operationId === "string" && op.operationId.trim() !== ""
              ? op.operationId.trim().replace(/\s+/g, "_")
              : segmentsName(method, path)
            const name = `${options.namespace}/${opName}`
            if (seen.has(name)) throw new DuplicateName(name)
            seen.add(name)
            const properties: JsonObject = {}
            const required: Array<string> = []
            for (const p of parameters) {
              properties[p.name] = p.schema
              if (p.required) required.push(p.name)
            }
            if (bodySchema !== undefined) {
              properties.body = bodySchema
              if (isObject(requestBody) && requestBody.required === true) required.push("body")
            }
            const route: Route = { method, path, parameters, hasBody: bodySchema !== undefined, streaming }
            const spec = Operation.makeSpec(streaming ? "subscription" : method === "get" ? "query" : "mutation", {
              name,
              description: (typeof op.summary === "string" ? op.summary : typeof op.description === "string" ? op.description : undefined) ??
                `${method.toUpperCase()} ${path}`,
              input: Schema.Unknown,
              output: Schema.Unknown,
              inputJsonSchema: publishable({ type: "object", properties, ...(required.length === 0 ? {} : { required }) }, components),
              outputJsonSchema: publishable(output, components),
              errors,
              ...(options.visibility === "external" ? { access: options.access } : {})
            })
            registrations.push(Operation.registration(spec, handlerOf(baseUrl, route), {
              provenance: "FromOpenAPI",
              visibility: options.visibility ?? "internal",
              ...(options.credential === undefined
                ? {}
                : { capabilities: { [CREDENTIAL_CAPABILITY]: Redacted.make<unknown>(options.credential) } })
            }))
          }
        }
        return registrations
      },
      catch: (error) =>
        error instanceof DuplicateName
          ? AdapterError.make("SamePeerCollision", `the OpenAPI document names ${error.message} twice`)
          : AdapterError.make("SchemaParse", `cannot import the OpenAPI document (${options.namespace}): ${(error as Error).message}`)
    })
})

class DuplicateName extends Error {}
