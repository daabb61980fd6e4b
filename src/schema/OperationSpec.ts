/**
 * The wire (discovery) form of an operation's spec, in snake_case (SPEC §5 `services/schema`, `services/list`).
 *
 * Handlers are authored with Effect Schema (see `services/Operation.ts`); the registry derives this JSON form, with
 * the input and output schemas as JSON Schema. `from_call` reads it back when importing a remote's operations.
 */
import { Schema } from "effect"

export const OpType = Schema.Literal("query", "mutation", "subscription")
export type OpType = typeof OpType.Type

export const Visibility = Schema.Literal("external", "internal")
export type Visibility = typeof Visibility.Type

/** A JSON Schema document (an object; `{}` accepts anything). */
export const JsonSchema = Schema.Record({ key: Schema.String, value: Schema.Unknown })
export type JsonSchema = typeof JsonSchema.Type

export const AccessControlJson = Schema.Struct({
  required_scopes: Schema.Array(Schema.String),
  required_scopes_any: Schema.Array(Schema.String),
  resource_type: Schema.NullOr(Schema.String),
  resource_action: Schema.NullOr(Schema.String)
}).annotations({ identifier: "AccessControl" })
export type AccessControlJson = typeof AccessControlJson.Type

export const ErrorSchemaJson = Schema.Struct({
  code: Schema.String,
  description: Schema.String,
  schema: Schema.NullOr(JsonSchema),
  http_status: Schema.NullOr(Schema.Int)
}).annotations({ identifier: "ErrorSchema" })
export type ErrorSchemaJson = typeof ErrorSchemaJson.Type

/** `services/schema` output. */
export const OperationSpecJson = Schema.Struct({
  name: Schema.String,
  namespace: Schema.String,
  op_type: OpType,
  visibility: Visibility,
  description: Schema.optional(Schema.String),
  input_schema: JsonSchema,
  output_schema: JsonSchema,
  error_schemas: Schema.Array(ErrorSchemaJson),
  access_control: AccessControlJson
}).annotations({ identifier: "OperationSpec" })
export type OperationSpecJson = typeof OperationSpecJson.Type

/** One entry of `services/list`. */
export const OperationSummary = Schema.Struct({
  name: Schema.String,
  namespace: Schema.String,
  op_type: OpType
}).annotations({ identifier: "OperationSummary" })
export type OperationSummary = typeof OperationSummary.Type

/** `services/list` output. */
export const OperationList = Schema.Struct({ operations: Schema.Array(OperationSummary) })
export type OperationList = typeof OperationList.Type
