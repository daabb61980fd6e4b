/**
 * The discovery operations every node serves (SPEC §5), External and open to anyone; what they show is filtered by
 * visibility and by the caller's access:
 *
 * - `services/list` (input `{}`) → `{"operations": [{"name","namespace","op_type"}]}`: the External operations
 *   whose access control the caller passes.
 * - `services/schema` (input `{"name"}`) → the full spec in snake_case. An unknown, Internal, or forbidden operation
 *   answers `NOT_FOUND` (unlike the reference, existence is not leaked); a missing name is `INVALID_INPUT "missing
 *   required field: name"`.
 */
import { Effect, Schema } from "effect"
import * as CallError from "../errors/CallError.js"
import { OperationList, OperationSpecJson } from "../schema/OperationSpec.js"
import * as Operation from "../services/Operation.js"
import type { HandlerRegistration } from "../services/Operation.js"
import type { OperationSource } from "./Dispatcher.js"

export const LIST = "services/list"
export const SCHEMA = "services/schema"

const visibleTo = (registration: HandlerRegistration, ctx: Operation.OperationContext) =>
  registration.spec.visibility === "external" &&
  Operation.check(registration.spec.accessControl, ctx.identity) === undefined

/** `base` plus the discovery operations, which describe the combined source. */
export const withDiscovery = (base: OperationSource): OperationSource => {
  const list = Operation.query({
    name: LIST,
    description: "The operations you may call.",
    input: Schema.Union(Schema.Struct({}), Schema.Null),
    output: OperationList,
    handler: (_, ctx) =>
      Effect.sync(() => {
        const operations = []
        for (const registration of source.list()) {
          if (!visibleTo(registration, ctx)) continue
          const { name, namespace, opType } = registration.spec
          operations.push({ name, namespace, op_type: opType })
        }
        return { operations }
      })
  })
  const schema = Operation.query({
    name: SCHEMA,
    description: "The full spec of an operation you may call.",
    input: Schema.Struct({ name: Schema.String }),
    output: OperationSpecJson,
    handler: ({ name }, ctx) => {
      const normalized = Operation.normalizeName(name)
      const registration = source.lookup(normalized)
      return registration === undefined || !visibleTo(registration, ctx)
        ? Effect.fail(CallError.notFound(normalized))
        : Effect.succeed(Operation.specToJson(registration.spec))
    }
  })
  const own: ReadonlyArray<HandlerRegistration> = [list, schema]
  const source: OperationSource = {
    lookup: (name) => name === LIST ? list : name === SCHEMA ? schema : base.lookup(name),
    list: function*() {
      yield* own
      for (const registration of base.list()) {
        if (registration.spec.name !== LIST && registration.spec.name !== SCHEMA) yield registration
      }
    }
  }
  return source
}
