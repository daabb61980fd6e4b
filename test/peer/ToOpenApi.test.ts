/**
 * to_openapi: the gateway's OpenAPI 3.1 document validates (@seriousme/openapi-schema-validator), has no `$id`
 * (Effect emits `/schemas/unknown` for every `Schema.Unknown`; duplicates make a 3.1 document invalid), has every
 * `$ref` resolvable (the schemas' `$defs` are hoisted into components), a typed path per operation the caller may call,
 * and declared errors under their `http_status`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Validator } from "@seriousme/openapi-schema-validator"
import { Effect, JSONSchema, Option, Schema, Stream } from "effect"
import * as Discovery from "../../src/call/Discovery.js"
import * as CallError from "../../src/errors/CallError.js"
import * as ToOpenApi from "../../src/peer/ToOpenApi.js"
import * as Operation from "../../src/services/Operation.js"
import * as OperationRegistry from "../../src/services/OperationRegistry.js"

const Point = Schema.Struct({ x: Schema.Number, y: Schema.Number }).annotations({ identifier: "Point" })
// Another schema with the same identifier and a different shape: it must not overwrite the first.
const OtherPoint = Schema.Struct({ lat: Schema.Number, lon: Schema.Number }).annotations({ identifier: "Point" })

const source = Discovery.withDiscovery(OperationRegistry.sourceOf([
  Operation.query({
    name: "geo/move",
    description: "Moves a point",
    input: Schema.Struct({ from: Point, by: Schema.Array(Point), note: Schema.Unknown }),
    output: Schema.Struct({ to: Point, extra: Schema.Unknown }),
    errors: [
      Operation.error({ code: "OUT_OF_BOUNDS", description: "off the map", schema: Schema.Struct({ at: Point }), httpStatus: 409 }),
      Operation.error({ code: "NO_STATUS", description: "declared without a status" })
    ],
    handler: ({ from }) => Effect.succeed({ to: from, extra: null })
  }),
  Operation.query({
    name: "geo/where",
    input: Schema.Unknown,
    output: OtherPoint,
    handler: () => Effect.succeed({ lat: 0, lon: 0 })
  }),
  Operation.subscription({
    name: "geo/track",
    input: Schema.Unknown,
    output: Point,
    handler: () => Stream.make({ x: 1, y: 2 })
  }),
  Operation.mutation({
    name: "admin/reset",
    input: Schema.Unknown,
    output: Schema.Unknown,
    access: { requiredScopes: ["admin"] },
    handler: () => Effect.fail(CallError.internal("no"))
  }),
  Operation.query({
    name: "geo/internal",
    input: Schema.Unknown,
    output: Schema.Unknown,
    visibility: "internal",
    handler: () => Effect.succeed(null)
  })
]))

/** Every value of `key` anywhere in `value`, with where it is. */
const collect = (value: unknown, key: string, path = "#"): Array<[string, unknown]> => {
  if (typeof value !== "object" || value === null) return []
  const out: Array<[string, unknown]> = []
  for (const [k, v] of Object.entries(value)) {
    if (k === key) out.push([path, v])
    out.push(...collect(v, key, `${path}/${k}`))
  }
  return out
}

const resolvePointer = (doc: unknown, ref: string): unknown =>
  ref.slice(2).split("/").map((p) => decodeURIComponent(p).replace(/~1/g, "/").replace(/~0/g, "~"))
    .reduce<unknown>((node, part) => (typeof node === "object" && node !== null ? (node as Record<string, unknown>)[part] : undefined), doc)

describe("to_openapi", () => {
  it.effect("the document validates as OpenAPI 3.1, without $id and with every $ref resolvable", () =>
    Effect.gen(function*() {
      // What the fix is for: Effect's JSON Schema repeats $id "/schemas/unknown".
      expect(JSON.stringify(JSONSchema.make(Schema.Struct({ a: Schema.Unknown, b: Schema.Unknown })))).toContain(`"$id":"/schemas/unknown"`)

      // … and the validator refuses a document that keeps them.
      const { $schema: _, ...unknown } = JSONSchema.make(Schema.Unknown)
      const raw = {
        openapi: "3.1.0",
        info: { title: "raw", version: "1" },
        paths: {
          "/a": {
            post: {
              requestBody: { content: { "application/json": { schema: { properties: { a: { ...unknown }, b: { ...unknown } } } } } },
              responses: { "200": { description: "ok" } }
            }
          }
        }
      }
      const refused = yield* Effect.promise(() => new Validator().validate(raw as Parameters<Validator["validate"]>[0]))
      expect(refused.valid).toBe(false)
      expect(JSON.stringify(refused.errors)).toContain("defined more than once")

      const doc = ToOpenApi.document(source, { title: "test node", version: "1.2.3" })
      const validator = new Validator()
      const result = yield* Effect.promise(() => validator.validate(doc as Parameters<Validator["validate"]>[0]))
      expect(result.errors).toBeUndefined()
      expect(result.valid).toBe(true)
      expect(validator.version).toBe("3.1")
      expect(collect(doc, "$id")).toEqual([])
      expect(collect(doc, "$schema")).toEqual([])
      const refs = collect(doc, "$ref").map(([, ref]) => ref as string)
      expect(refs.length).toBeGreaterThan(5)
      for (const ref of refs) {
        expect(ref).toMatch(/^#\/components\/schemas\//)
        expect(resolvePointer(doc, ref), ref).toBeDefined()
      }
      // The validator dereferences it as a whole.
      expect(() => validator.resolveRefs()).not.toThrow()
    }))

  it.effect("a typed path per operation the caller may call, declared errors under their http_status", () =>
    Effect.gen(function*() {
      const doc = ToOpenApi.document(source) as any
      const paths = Object.keys(doc.paths)
      expect(paths).toEqual(expect.arrayContaining(["/call", "/batch", "/subscribe", "/search", "/schema", "/healthz"]))
      expect(paths).toEqual(expect.arrayContaining(["/call/geo/move", "/call/geo/where", "/subscribe/geo/track", "/call/services/list"]))
      // Internal operations and what the caller may not call are not described.
      expect(paths).not.toContain("/call/geo/internal")
      expect(paths).not.toContain("/call/admin/reset")
      const withAdmin = ToOpenApi.document(source, { identity: Option.some({ id: "root", scopes: ["admin"], resources: {} }) }) as any
      expect(Object.keys(withAdmin.paths)).toContain("/call/admin/reset")

      const move = doc.paths["/call/geo/move"].post
      expect(move.operationId).toBe("call_geo_move")
      expect(move.description).toBe("Moves a point")
      expect(move.requestBody.content["application/json"].schema.properties.from).toEqual({ $ref: "#/components/schemas/Point" })
      expect(move.responses["200"].content["application/json"].schema.properties.output.properties.to).toEqual({ $ref: "#/components/schemas/Point" })
      expect(move.responses["409"].description).toBe("OUT_OF_BOUNDS: off the map")
      expect(move.responses["409"].content["application/json"].schema.properties).toMatchObject({
        code: { const: "OUT_OF_BOUNDS" },
        details: { properties: { at: { $ref: "#/components/schemas/Point" } } }
      })
      // A code declared without a status is served as 500, beside INTERNAL.
      expect(move.responses["500"].description).toBe("INTERNAL; or NO_STATUS: declared without a status")
      // Two different schemas named Point: both kept under distinct names.
      expect(doc.components.schemas.Point.required).toEqual(["x", "y"])
      expect(doc.components.schemas.Point_2.required).toEqual(["lat", "lon"])
      expect(doc.paths["/call/geo/where"].post.responses["200"].content["application/json"].schema.properties.output).toEqual({ $ref: "#/components/schemas/Point_2" })
      // A subscription is an event stream, its item schema beside it.
      const track = doc.paths["/subscribe/geo/track"].post.responses["200"].content["text/event-stream"]
      expect(track["x-alknet-item-schema"]).toEqual({ $ref: "#/components/schemas/Point" })
    }))
})
