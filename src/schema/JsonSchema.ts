/**
 * Small helpers for JSON values and JSON Schemas, shared by the adapters that turn operations into OpenAPI documents
 * and MCP tools and back.
 */

export type JsonObject = Record<string, unknown>

/** A plain JSON object (not an array, not null). */
export const isObject = (value: unknown): value is JsonObject =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** Keywords whose value maps names (not keywords) to schemas. */
const SCHEMA_MAPS = new Set(["properties", "patternProperties", "$defs", "definitions", "dependentSchemas"])

/**
 * A copy of a JSON Schema without `$id` / `$schema` (Effect's `JSONSchema.make` gives `Schema.Unknown` the `$id`
 * `/schemas/unknown`, and two equal `$id`s make an OpenAPI 3.1 document invalid). With `ref`, each local reference
 * `#/$defs/NAME` becomes `ref(NAME)` (e.g. a reference into an OpenAPI document's components).
 */
export const withoutIds = (schema: unknown, ref?: (name: string) => string): unknown => {
  if (Array.isArray(schema)) return schema.map((s) => withoutIds(s, ref))
  if (!isObject(schema)) return schema
  const out: JsonObject = {}
  for (const [key, value] of Object.entries(schema)) {
    if (key === "$id" || key === "$schema") continue
    if (ref !== undefined && key === "$ref" && typeof value === "string" && value.startsWith("#/$defs/")) {
      out[key] = ref(decodeURIComponent(value.slice("#/$defs/".length)))
    } else if (SCHEMA_MAPS.has(key) && isObject(value)) {
      const map: JsonObject = {}
      for (const [name, sub] of Object.entries(value)) map[name] = withoutIds(sub, ref)
      out[key] = map
    } else {
      out[key] = withoutIds(value, ref)
    }
  }
  return out
}
