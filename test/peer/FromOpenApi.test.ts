/**
 * from_openapi against a real `node:http` API on 127.0.0.1 described by a YAML document with local `$ref`s: GET with
 * path, query and header parameters, POST with a JSON body, documented error responses, an SSE endpoint, and an API
 * key header taken from the registration's capability. Called through the registry's dispatch (as a caller would).
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Deferred, Effect, Redacted, Stream } from "effect"
import * as Http from "node:http"
import * as FromOpenApi from "../../src/peer/FromOpenApi.js"
import * as OperationRegistry from "../../src/services/OperationRegistry.js"
import { listen } from "../shared/http.js"

const KEY = "k3y-not-in-any-url"

const DOCUMENT = `
openapi: 3.1.0
info: { title: pets, version: "1" }
servers:
  - url: /api
paths:
  /pets/{id}:
    parameters:
      - $ref: "#/components/parameters/PetId"
    get:
      operationId: getPet
      summary: One pet
      parameters:
        - { name: verbose, in: query, schema: { type: boolean } }
        - { name: x-trace, in: header, schema: { type: string } }
      responses:
        "200":
          description: the pet
          content:
            application/json:
              schema: { $ref: "#/components/schemas/Pet" }
        "404":
          description: no such pet
        "401":
          description: bad key
  /pets:
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema: { type: object, properties: { name: { type: string } }, required: [name] }
      responses:
        "201":
          description: created
          content:
            application/json:
              schema: { $ref: "#/components/schemas/Pet" }
  /ticks:
    get:
      operationId: ticks
      parameters:
        - { name: count, in: query, required: true, schema: { type: integer } }
      responses:
        "200":
          description: ticks
          content:
            text/event-stream:
              schema: { type: string }
  /slow:
    get:
      operationId: slow
      responses:
        "200": { description: never }
components:
  parameters:
    PetId: { name: id, in: path, required: true, schema: { type: string } }
  schemas:
    Pet:
      type: object
      properties: { id: { type: string }, name: { type: string }, verbose: { type: string }, trace: { type: string } }
`

interface Seen {
  readonly urls: Array<string>
}

const api = (seen: Seen, slowClosed: Deferred.Deferred<void>) =>
  Effect.gen(function*() {
    const server = Http.createServer((req, res) => {
      seen.urls.push(req.url ?? "")
      const json = (status: number, body: unknown) => {
        res.writeHead(status, { "content-type": "application/json" })
        res.end(JSON.stringify(body))
      }
      if (req.headers["x-api-key"] !== KEY) return json(401, { error: "bad key" })
      const url = new URL(req.url ?? "/", "http://api")
      const pet = /^\/api\/pets\/([^/]+)$/.exec(url.pathname)
      if (req.method === "GET" && pet !== null) {
        const id = decodeURIComponent(pet[1]!)
        if (id === "404") return json(404, { error: "no such pet" })
        return json(200, { id, name: "rex", verbose: url.searchParams.get("verbose") ?? "", trace: req.headers["x-trace"] ?? "" })
      }
      if (req.method === "POST" && url.pathname === "/api/pets") {
        let body = ""
        req.on("data", (c: Buffer) => (body += c.toString()))
        req.on("end", () => json(201, { id: "p1", name: (JSON.parse(body) as { name: string }).name }))
        return
      }
      if (url.pathname === "/api/ticks") {
        res.writeHead(200, { "content-type": "text/event-stream" })
        const count = Number(url.searchParams.get("count"))
        for (let n = 0; n < count; n++) res.write(`data: {"n":${n}}\n\n`)
        return res.end()
      }
      if (url.pathname === "/api/slow") {
        req.on("close", () => Effect.runSync(Deferred.succeed(slowClosed, undefined)))
        return
      }
      json(404, { error: "no route" })
    })
    const base = yield* listen(server)
    return `${base}/openapi.yaml`
  })

describe("from_openapi", () => {
  it.live("imports GET / POST / SSE operations and calls the API with the credential in its header", () =>
    Effect.gen(function*() {
      const seen: Seen = { urls: [] }
      const slowClosed = yield* Deferred.make<void>()
      const documentUrl = yield* api(seen, slowClosed)
      const document = yield* FromOpenApi.parse(DOCUMENT)
      const imported = yield* FromOpenApi.fromOpenApi(document, {
        namespace: "pets",
        documentUrl,
        credential: { type: "header", header: "X-API-Key", secret: Redacted.make(KEY) },
        visibility: "external",
        access: {}
      }).import()
      expect(imported.map((r) => [r.spec.name, r.spec.opType, r.provenance])).toEqual([
        ["pets/getPet", "query", "FromOpenAPI"],
        ["pets/post_pets", "mutation", "FromOpenAPI"],
        ["pets/ticks", "subscription", "FromOpenAPI"],
        ["pets/slow", "query", "FromOpenAPI"]
      ])
      const getPet = imported[0]!.spec
      expect(getPet.inputJsonSchema).toEqual({
        type: "object",
        properties: { id: { type: "string" }, verbose: { type: "boolean" }, "x-trace": { type: "string" } },
        required: ["id"]
      })
      expect(getPet.outputJsonSchema).toMatchObject({ $ref: "#/$defs/Pet", $defs: { Pet: { type: "object" } } })
      expect(getPet.errors.map((e) => [e.code, e.httpStatus])).toEqual([["HTTP_401", 401], ["HTTP_404", 404]])
      // The secret is a capability, never in the spec or its JSON.
      expect(JSON.stringify(imported.map((r) => r.spec))).not.toContain(KEY)

      const registry = yield* OperationRegistry.make(imported)
      expect(yield* registry.invoke("pets/getPet", { id: "7 8", verbose: true, "x-trace": "t-1" })).toEqual({
        id: "7 8",
        name: "rex",
        verbose: "true",
        trace: "t-1"
      })
      // Path and query in the URL, the header parameter and the key in headers (never in the query).
      expect(seen.urls.at(-1)).toBe("/api/pets/7%208?verbose=true")
      expect(seen.urls.join(" ")).not.toContain(KEY)
      expect(yield* registry.invoke("pets/post_pets", { body: { name: "tom" } })).toEqual({ id: "p1", name: "tom" })

      const missing = yield* Effect.flip(registry.invoke("pets/getPet", { id: "404" }))
      expect(missing).toMatchObject({ code: "HTTP_404", message: "HTTP 404 Not Found", details: { status: 404, body: { error: "no such pet" } } })
      expect((yield* Effect.flip(registry.invoke("pets/getPet", {}))).message).toBe("missing required field: id")

      const ticks = yield* Stream.runCollect(registry.subscribe("pets/ticks", { count: 3 }))
      expect(Chunk.toReadonlyArray(ticks)).toEqual([{ n: 0 }, { n: 1 }, { n: 2 }])

      // An interrupted call (here: its deadline) aborts the HTTP request.
      const timedOut = yield* Effect.flip(registry.invoke("pets/slow", {}, { timeout: "200 millis" }))
      expect(timedOut.code).toBe("TIMEOUT")
      yield* Deferred.await(slowClosed)

      // Without the credential the API refuses: its documented 401 comes back as HTTP_401.
      const anonymous = yield* FromOpenApi.fromOpenApi(document, { namespace: "pets", documentUrl, visibility: "external", access: {} }).import()
      const refused = yield* Effect.flip((yield* OperationRegistry.make(anonymous)).invoke("pets/getPet", { id: "1" }))
      expect(refused).toMatchObject({ code: "HTTP_401", details: { body: { error: "bad key" } } })
    }).pipe(Effect.scoped))

  it.effect("a document that is not OpenAPI, or has a remote $ref, is SchemaParse", () =>
    Effect.gen(function*() {
      expect((yield* Effect.flip(FromOpenApi.parse("{nope"))).reason).toBe("SchemaParse")
      expect((yield* Effect.flip(FromOpenApi.parse("a: 1"))).message).toBe("not an OpenAPI document: no openapi version")
      const remoteRef = yield* FromOpenApi.parse(`{"openapi":"3.1.0","paths":{"/x":{"get":{"responses":{"200":{"$ref":"https://evil/x"}}}}}}`)
      const failed = yield* Effect.flip(FromOpenApi.fromOpenApi(remoteRef, { namespace: "x", baseUrl: "http://127.0.0.1:1" }).import())
      expect(failed).toMatchObject({ reason: "SchemaParse" })
      expect(failed.message).toContain("only local $refs are supported")
    }))
})
