/**
 * `from_call` (SPEC §9): import another node's operations over a call-protocol connection.
 *
 * Discovery is `services/list` then `services/schema` for each operation listed (the remote shows us only what our
 * identity may call). Each becomes a forwarding leaf: provenance `FromCall`, Internal unless `visibility` says
 * otherwise, no authority, no env; an External leaf keeps the remote's declared access control (this node checks its
 * own callers against it before forwarding). Its input and output are passed through as JSON (the remote validates;
 * its JSON Schemas are published unchanged) and its declared error codes are declared here too, so a remote domain
 * error comes back with its code, message, retryable flag and details intact.
 *
 * A forwarded call carries:
 * - `forwarded_for` = the identity the local call runs under (audit only: the remote's access control checks the
 *   connection's own identity);
 * - the remaining time to the local deadline as its timeout (TIMEOUT at once if none is left);
 * - cancellation: interrupting the forwarding fiber sends `call.aborted` for the outbound request, so the remote
 *   subtree is interrupted too. Subscriptions forward as streams; stopping early aborts them the same way.
 *
 * The remote's own discovery operations (`services/*`) are not imported.
 */
import { Clock, Effect, Option, Schema, Stream } from "effect"
import type * as Connection from "../call/Connection.js"
import * as AdapterError from "../errors/AdapterError.js"
import * as CallError from "../errors/CallError.js"
import type { Identity } from "../schema/Identity.js"
import * as Json from "../schema/Json.js"
import { OperationList, OperationSpecJson } from "../schema/OperationSpec.js"
import type { OperationSummary } from "../schema/OperationSpec.js"
import * as Operation from "../services/Operation.js"
import type { OperationAdapter } from "../services/OperationAdapter.js"

export interface FromCallOptions {
  /** Register `prefix/ns/op` instead of `ns/op` (the remote is still called by its own name). */
  readonly namespacePrefix?: string
  /** Import only what passes (default: everything listed). */
  readonly operationFilter?: (operation: OperationSummary) => boolean
  /** Visibility of the imported leaves (default `internal`: reachable through `ctx.env` only). */
  readonly visibility?: Operation.Visibility
  /** What to call the remote in messages (default `remote`). */
  readonly label?: string
}

/** What a forwarding leaf calls: a connection. */
export type Remote = Pick<Connection.Connection, "call" | "subscribe">

const adapterError = (label: string, what: string) => (error: CallError.CallError): AdapterError.AdapterError => {
  if (error.code === "FORBIDDEN") {
    return AdapterError.make("Unauthorized", `${label} refused ${what}: ${error.message}`)
  }
  if (error.message === "connection closed" || error.message === "request aborted by peer") {
    return AdapterError.make("Transport", `${label}: ${what} failed: ${error.message}`)
  }
  return AdapterError.make("DiscoveryFailed", `${label}: ${what} failed: ${error.code} ${error.message}`)
}

/** The options of a forwarded call: remaining deadline and `forwarded_for`. */
const forwardOptions = (ctx: Operation.OperationContext, now: number): { timeout?: number; forwardedFor?: Identity } => {
  const options: { timeout?: number; forwardedFor?: Identity } = {}
  if (Option.isSome(ctx.deadline)) options.timeout = ctx.deadline.value - now
  if (Option.isSome(ctx.identity)) options.forwardedFor = ctx.identity.value
  return options
}

/** The forwarding handler of one remote operation. */
const forwarder = (remote: Remote, remoteName: string, streaming: boolean): Operation.Handler =>
  streaming
    ? {
      _tag: "Streaming",
      run: (input, ctx) =>
        Stream.unwrap(Effect.map(Clock.currentTimeMillis, (now) => {
          const options = forwardOptions(ctx, now)
          return options.timeout !== undefined && options.timeout <= 0
            ? Stream.fail(CallError.timeout())
            : remote.subscribe(remoteName, input, options)
        }))
    }
    : {
      _tag: "Unary",
      run: (input, ctx) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) => {
          const options = forwardOptions(ctx, now)
          return options.timeout !== undefined && options.timeout <= 0
            ? Effect.fail(CallError.timeout())
            : remote.call(remoteName, input, options)
        })
    }

/** Build the forwarding registration of one remote spec; a spec we cannot use is `SchemaParse`. */
export const forwarding = (
  remote: Remote,
  spec: OperationSpecJson,
  options: FromCallOptions = {}
): Effect.Effect<Operation.HandlerRegistration, AdapterError.AdapterError> =>
  Effect.try({
    try: () => {
      const name = options.namespacePrefix === undefined ? spec.name : `${options.namespacePrefix}/${spec.name}`
      const local = Operation.makeSpec(spec.op_type, {
        name,
        ...(spec.description === undefined ? {} : { description: spec.description }),
        input: Schema.Unknown,
        output: Schema.Unknown,
        inputJsonSchema: spec.input_schema,
        outputJsonSchema: spec.output_schema,
        // Exported to this node's callers: they must pass the access control the remote declares, here too.
        ...(options.visibility === "external" ? { access: accessOf(spec.access_control) } : {}),
        errors: spec.error_schemas.map((e) =>
          Operation.error({
            code: e.code,
            description: e.description,
            ...(e.http_status === null ? {} : { httpStatus: e.http_status })
          })
        )
      })
      return Operation.registration(local, forwarder(remote, spec.name, spec.op_type === "subscription"), {
        provenance: "FromCall",
        visibility: options.visibility ?? "internal"
      })
    },
    catch: (e) =>
      AdapterError.make("SchemaParse", `${options.label ?? "remote"}: cannot import ${spec.name}: ${(e as Error).message}`)
  })

const accessOf = (acl: OperationSpecJson["access_control"]): Operation.AccessControlInput => ({
  requiredScopes: acl.required_scopes,
  requiredScopesAny: acl.required_scopes_any,
  resourceType: acl.resource_type ?? undefined,
  resourceAction: acl.resource_action ?? undefined
})

/** Decode what the remote answered; one nested too deep is malformed before any recursive decoder sees it. */
const decode = <A, I>(schema: Schema.Schema<A, I>, label: string, what: string) => (u: unknown) =>
  Json.exceedsDepth(u)
    ? Effect.fail(AdapterError.make("SchemaParse", `${label}: ${what} is malformed: ${Json.tooDeep(what)}`))
    : Effect.mapError(
      Schema.decodeUnknown(schema)(u),
      (e) => AdapterError.make("SchemaParse", `${label}: ${what} is malformed: ${e.message}`)
    )

/** `from_call(connection, options)`: an adapter importing the remote's operations. */
export const fromCall = (remote: Remote, options: FromCallOptions = {}): OperationAdapter => {
  const label = options.label ?? "remote"
  return {
    description: `from_call ${label}`,
    import: () =>
      Effect.gen(function*() {
        const listed = yield* remote.call("services/list", {}).pipe(
          Effect.mapError(adapterError(label, "services/list")),
          Effect.flatMap(decode(OperationList, label, "services/list"))
        )
        const wanted = listed.operations.filter((op) =>
          op.namespace !== "services" && (options.operationFilter === undefined || options.operationFilter(op))
        )
        const registrations = yield* Effect.forEach(wanted, (op) =>
          remote.call("services/schema", { name: op.name }).pipe(
            Effect.mapError(adapterError(label, `services/schema ${op.name}`)),
            Effect.flatMap(decode(OperationSpecJson, label, `the schema of ${op.name}`)),
            Effect.flatMap((spec) => forwarding(remote, spec, options))
          ), { concurrency: 8 })
        const seen = new Set<string>()
        for (const { spec } of registrations) {
          if (seen.has(spec.name)) {
            return yield* AdapterError.make("SamePeerCollision", `${label} serves ${spec.name} twice`)
          }
          seen.add(spec.name)
        }
        return registrations
      })
  }
}
