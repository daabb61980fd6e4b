/**
 * Operations: how they are authored (Effect Schema in and out, declared errors, access control), registered
 * (`HandlerRegistration`: provenance, composition authority, scoped env, capabilities) and what a handler sees
 * (`OperationContext`, whose `env` composes other operations). SPEC §6–§7.
 *
 * ```ts
 * const greet = Operation.query({
 *   name: "demo/greet",
 *   input: Schema.Struct({ name: Schema.String }),
 *   output: Schema.Struct({ greeting: Schema.String }),
 *   handler: ({ name }) => Effect.succeed({ greeting: `hello ${name}` })
 * })
 * ```
 *
 * Names are `namespace/op` (no leading slash; the wire form `/namespace/op` is accepted everywhere). Inputs and
 * outputs travel in their encoded (JSON) form: the dispatcher decodes the input with `input` (INVALID_INPUT names the
 * failing path) and encodes the handler's output with `output`.
 */
import { Effect, Either, JSONSchema, Option, ParseResult, Schema } from "effect"
import type { Redacted, Stream } from "effect"
import * as CallError from "../errors/CallError.js"
import type { Identity } from "../schema/Identity.js"
import * as Json from "../schema/Json.js"
import type * as Spec from "../schema/OperationSpec.js"

export type OpType = Spec.OpType
export type Visibility = Spec.Visibility

// ---------------------------------------------------------------------------------------------------------------
// Access control (SPEC §6)

export interface AccessControl {
  readonly requiredScopes: ReadonlyArray<string>
  readonly requiredScopesAny: ReadonlyArray<string>
  readonly resourceType: string | undefined
  readonly resourceAction: string | undefined
}

/** No restrictions: anyone may call, even without an identity. */
export const open: AccessControl = Object.freeze({
  requiredScopes: [],
  requiredScopesAny: [],
  resourceType: undefined,
  resourceAction: undefined
})

export interface AccessControlInput {
  /** Every one of these scopes is required. */
  readonly requiredScopes?: ReadonlyArray<string> | undefined
  /** At least one of these scopes is required. */
  readonly requiredScopesAny?: ReadonlyArray<string> | undefined
  /** `identity.resources[resourceType]` must exist (and contain `resourceAction` when given). */
  readonly resourceType?: string | undefined
  readonly resourceAction?: string | undefined
}

export const accessControl = (input: AccessControlInput = {}): AccessControl =>
  Object.freeze({
    requiredScopes: input.requiredScopes ?? [],
    requiredScopesAny: input.requiredScopesAny ?? [],
    resourceType: input.resourceType,
    resourceAction: input.resourceAction
  })

const isOpen = (acl: AccessControl): boolean =>
  acl.requiredScopes.length === 0 && acl.requiredScopesAny.length === 0 && acl.resourceType === undefined

/**
 * Check an identity against an access control (SPEC §6); `undefined` when allowed, else the `FORBIDDEN` error with
 * the exact message of SPEC §4.
 */
export const check = (acl: AccessControl, identity: Option.Option<Identity>): CallError.CallError | undefined => {
  if (isOpen(acl)) return undefined
  if (Option.isNone(identity)) return CallError.forbidden("authentication required")
  const { resources, scopes } = identity.value
  for (const scope of acl.requiredScopes) {
    if (!scopes.includes(scope)) return CallError.forbidden(`missing required scope: ${scope}`)
  }
  if (acl.requiredScopesAny.length > 0 && !acl.requiredScopesAny.some((scope) => scopes.includes(scope))) {
    return CallError.forbidden(`missing required scope (any of: ${acl.requiredScopesAny.join(", ")})`)
  }
  if (acl.resourceType !== undefined) {
    const actions = Object.prototype.hasOwnProperty.call(resources, acl.resourceType)
      ? resources[acl.resourceType]
      : undefined
    const missing = acl.resourceAction === undefined ? actions === undefined : !actions?.includes(acl.resourceAction)
    if (missing) {
      return CallError.forbidden(
        acl.resourceAction === undefined
          ? `missing resource: ${acl.resourceType}`
          : `missing resource: ${acl.resourceType}/${acl.resourceAction}`
      )
    }
  }
  return undefined
}

// ---------------------------------------------------------------------------------------------------------------
// Declared errors

export interface ErrorDefinition {
  readonly code: string
  readonly description: string
  /** The shape of `details` (encoded with it before it goes on the wire). */
  readonly schema: Schema.Schema<any, any> | undefined
  readonly httpStatus: number | undefined
}

export const error = (definition: {
  readonly code: string
  readonly description: string
  readonly schema?: Schema.Schema<any, any>
  readonly httpStatus?: number
}): ErrorDefinition =>
  Object.freeze({
    code: definition.code,
    description: definition.description,
    schema: definition.schema,
    httpStatus: definition.httpStatus
  })

// ---------------------------------------------------------------------------------------------------------------
// Specs

/** What the registry knows about an operation, independent of its handler. */
export interface OperationSpec {
  readonly name: string
  readonly namespace: string
  readonly opType: OpType
  readonly visibility: Visibility
  readonly description: string | undefined
  readonly errors: ReadonlyArray<ErrorDefinition>
  readonly accessControl: AccessControl
  /** Validates a wire input (JSON) into what the handler receives. */
  readonly decodeInput: (input: unknown) => Either.Either<unknown, ParseResult.ParseIssue>
  /** Turns a handler's output into its wire (JSON) form. */
  readonly encodeOutput: (output: unknown) => Either.Either<unknown, ParseResult.ParseIssue>
  readonly inputJsonSchema: Spec.JsonSchema
  readonly outputJsonSchema: Spec.JsonSchema
}

const jsonSchemaOf = (schema: Schema.Schema<any, any>): Spec.JsonSchema => {
  try {
    const { $schema: _, ...rest } = JSONSchema.make(schema) as unknown as Record<string, unknown>
    return rest
  } catch {
    return {}
  }
}

const isUnknown = (schema: Schema.Schema<any, any>) =>
  schema.ast._tag === "UnknownKeyword" || schema.ast._tag === "AnyKeyword"

const identityParse = (u: unknown): Either.Either<unknown, ParseResult.ParseIssue> => Either.right(u)

/** Strip the wire form's leading slash. */
export const normalizeName = (name: string): string => (name.charCodeAt(0) === 47 ? name.slice(1) : name)

const NAME = /^[^/\s]+(\/[^/\s]+)+$/

export interface SpecInput<IA, II, OA, OI> {
  /** `namespace/op`; a leading slash is dropped. */
  readonly name: string
  readonly description?: string
  readonly input: Schema.Schema<IA, II>
  readonly output: Schema.Schema<OA, OI>
  readonly errors?: ReadonlyArray<ErrorDefinition>
  readonly access?: AccessControlInput
  /** Default `external` for local operations. */
  readonly visibility?: Visibility
  /** JSON Schemas to publish instead of the derived ones (imported operations that only have JSON Schema). */
  readonly inputJsonSchema?: Spec.JsonSchema
  readonly outputJsonSchema?: Spec.JsonSchema
}

/** Build a spec; throws on a malformed name (a startup bug). */
export const makeSpec = <IA, II, OA, OI>(opType: OpType, input: SpecInput<IA, II, OA, OI>): OperationSpec => {
  const name = normalizeName(input.name)
  if (!NAME.test(name)) throw new TypeError(`operation name must look like "namespace/op", got ${JSON.stringify(name)}`)
  const access = input.access
  return Object.freeze({
    name,
    namespace: name.slice(0, name.indexOf("/")),
    opType,
    visibility: input.visibility ?? "external",
    description: input.description,
    errors: Object.freeze([...(input.errors ?? [])]),
    accessControl: access === undefined ? open : accessControl(access),
    decodeInput: isUnknown(input.input)
      ? identityParse
      : ParseResult.decodeUnknownEither(input.input as Schema.Schema<unknown, unknown>, { errors: "first" }),
    encodeOutput: isUnknown(input.output)
      ? identityParse
      : ParseResult.encodeUnknownEither(input.output as Schema.Schema<unknown, unknown>, { errors: "first" }),
    inputJsonSchema: input.inputJsonSchema ?? jsonSchemaOf(input.input),
    outputJsonSchema: input.outputJsonSchema ?? jsonSchemaOf(input.output)
  })
}

/** The snake_case JSON of a spec, as `services/schema` returns it. */
export const specToJson = (spec: OperationSpec): Spec.OperationSpecJson => ({
  name: spec.name,
  namespace: spec.namespace,
  op_type: spec.opType,
  visibility: spec.visibility,
  ...(spec.description === undefined ? {} : { description: spec.description }),
  input_schema: spec.inputJsonSchema,
  output_schema: spec.outputJsonSchema,
  error_schemas: spec.errors.map((e) => ({
    code: e.code,
    description: e.description,
    schema: e.schema === undefined ? null : jsonSchemaOf(e.schema),
    http_status: e.httpStatus ?? null
  })),
  access_control: {
    required_scopes: spec.accessControl.requiredScopes,
    required_scopes_any: spec.accessControl.requiredScopesAny,
    resource_type: spec.accessControl.resourceType ?? null,
    resource_action: spec.accessControl.resourceAction ?? null
  }
})

// ---------------------------------------------------------------------------------------------------------------
// Registration (SPEC §6)

export type Provenance = "Local" | "Session" | "FromCall" | "FromOpenAPI" | "FromMCP" | "FromJsonSchema"

/** The authority a composing handler's children run under (SPEC §7 authority switch). */
export interface CompositionAuthority {
  readonly label: string
  readonly scopes: ReadonlyArray<string>
  readonly resources: Readonly<Record<string, ReadonlyArray<string>>>
}

export const authority = (
  label: string,
  options: { readonly scopes?: ReadonlyArray<string>; readonly resources?: Record<string, ReadonlyArray<string>> } = {}
): CompositionAuthority => Object.freeze({ label, scopes: options.scopes ?? [], resources: options.resources ?? {} })

/** The identity a child runs under: the composing handler's authority. */
export const authorityIdentity = (authority: CompositionAuthority): Identity => ({
  id: authority.label,
  scopes: authority.scopes,
  resources: authority.resources
})

/**
 * Which operations a handler may invoke through `ctx.env`. Invoking a name it does not allow → `NOT_FOUND`.
 * An interface so the peer graph can add peer-pinned entries (`peer-id/op-name`).
 */
export interface ScopedEnv {
  readonly allows: (name: string) => boolean
  readonly names: ReadonlyArray<string>
}

/** May invoke nothing (the default). */
export const noEnv: ScopedEnv = Object.freeze({ allows: () => false, names: [] })

/** May invoke exactly these operations. */
export const scopedEnv = (names: Iterable<string>): ScopedEnv => {
  const set = new Set([...names].map(normalizeName))
  return Object.freeze({ allows: (name: string) => set.has(name), names: Object.freeze([...set]) })
}

/** Outbound secrets for a handler; never serialized, never from the wire. */
export type Capabilities = ReadonlyMap<string, Redacted.Redacted<unknown>>

export const noCapabilities: Capabilities = new Map()

export type Handler =
  | { readonly _tag: "Unary"; readonly run: (input: unknown, ctx: OperationContext) => Effect.Effect<unknown, CallError.CallError> }
  | {
    readonly _tag: "Streaming"
    readonly run: (input: unknown, ctx: OperationContext) => Stream.Stream<unknown, CallError.CallError>
  }

export interface HandlerRegistration {
  readonly spec: OperationSpec
  readonly handler: Handler
  readonly provenance: Provenance
  /** `None`: children invoked by this handler run with no identity. */
  readonly authority: Option.Option<CompositionAuthority>
  readonly scopedEnv: ScopedEnv
  readonly capabilities: Capabilities
}

export interface RegistrationOptions {
  readonly provenance?: Provenance
  /** Overrides the spec's visibility. Imported operations default to `internal`; Session ones are always internal. */
  readonly visibility?: Visibility
  readonly authority?: CompositionAuthority
  /** The operations this handler may invoke (default: none). */
  readonly env?: Iterable<string> | ScopedEnv
  readonly capabilities?: Capabilities | Record<string, Redacted.Redacted<unknown>>
}

const composes = (provenance: Provenance) => provenance === "Local" || provenance === "Session"

/**
 * Bundle a spec and handler into a registration. Throws (a startup bug) if the handler kind does not match the op type
 * or an imported registration is given authority or an env: only `Local` and `Session` operations compose.
 */
export const registration = (
  spec: OperationSpec,
  handler: Handler,
  options: RegistrationOptions = {}
): HandlerRegistration => {
  const provenance = options.provenance ?? "Local"
  if ((spec.opType === "subscription") !== (handler._tag === "Streaming")) {
    throw new TypeError(
      `operation ${spec.name}: a ${spec.opType} needs a ${spec.opType === "subscription" ? "streaming" : "unary"} handler`
    )
  }
  const env = options.env === undefined
    ? noEnv
    : "allows" in options.env
    ? options.env as ScopedEnv
    : scopedEnv(options.env as Iterable<string>)
  if (!composes(provenance) && (options.authority !== undefined || env.names.length > 0)) {
    throw new TypeError(`operation ${spec.name}: ${provenance} operations are leaves (no authority, no env)`)
  }
  const capabilities = options.capabilities === undefined
    ? noCapabilities
    : options.capabilities instanceof Map
    ? new Map(options.capabilities)
    : new Map(Object.entries(options.capabilities))
  const visibility: Visibility = provenance === "Session"
    ? "internal"
    : options.visibility ?? (composes(provenance) ? spec.visibility : "internal")
  return Object.freeze({
    spec: visibility === spec.visibility ? spec : Object.freeze({ ...spec, visibility }),
    handler,
    provenance,
    authority: Option.fromNullable(options.authority),
    scopedEnv: env,
    capabilities
  })
}

// ---------------------------------------------------------------------------------------------------------------
// Authoring

/** A typed operation definition; itself a `HandlerRegistration` (Local, no authority, no env) ready to register. */
export interface Operation<IA, II, OA, OI> extends HandlerRegistration {
  readonly input: Schema.Schema<IA, II>
  readonly output: Schema.Schema<OA, OI>
  /** The same operation registered with other options (authority, env, capabilities, provenance). */
  readonly with: (options: RegistrationOptions) => HandlerRegistration
}

const define = <IA, II, OA, OI>(
  spec: OperationSpec,
  input: SpecInput<IA, II, OA, OI>,
  handler: Handler,
  options: RegistrationOptions
): Operation<IA, II, OA, OI> => ({
  ...registration(spec, handler, options),
  input: input.input,
  output: input.output,
  with: (more) => registration(spec, handler, { ...options, ...more })
})

export interface UnaryDefinition<IA, II, OA, OI> extends SpecInput<IA, II, OA, OI>, RegistrationOptions {
  readonly handler: (input: IA, ctx: OperationContext) => Effect.Effect<OA, CallError.CallError>
}

export interface StreamingDefinition<IA, II, OA, OI> extends SpecInput<IA, II, OA, OI>, RegistrationOptions {
  readonly handler: (input: IA, ctx: OperationContext) => Stream.Stream<OA, CallError.CallError>
}

const unary = (opType: "query" | "mutation") =>
<IA, II, OA, OI>(definition: UnaryDefinition<IA, II, OA, OI>): Operation<IA, II, OA, OI> =>
  define(makeSpec(opType, definition), definition, {
    _tag: "Unary",
    run: definition.handler as (input: unknown, ctx: OperationContext) => Effect.Effect<unknown, CallError.CallError>
  }, definition)

/** A read-only request/response operation. */
export const query = unary("query")
/** A request/response operation with effects. */
export const mutation = unary("mutation")

/** A streaming operation: `call.responded` per item, then `call.completed`. */
export const subscription = <IA, II, OA, OI>(
  definition: StreamingDefinition<IA, II, OA, OI>
): Operation<IA, II, OA, OI> =>
  define(makeSpec("subscription", definition), definition, {
    _tag: "Streaming",
    run: definition.handler as (input: unknown, ctx: OperationContext) => Stream.Stream<unknown, CallError.CallError>
  }, definition)

// ---------------------------------------------------------------------------------------------------------------
// What a handler sees (SPEC §7)

export type AbortPolicy = "AbortDependents" | "ContinueRunning"

export interface InvokeOptions {
  /** How this child reacts when an ancestor is aborted (default: the parent's policy). */
  readonly abortPolicy?: AbortPolicy
}

/** The composition env: how a handler calls other operations. Composed per call (a trait with several layers). */
export interface OperationEnv {
  /**
   * Call an operation as a child of the current call: the child runs under this handler's composition authority,
   * with `internal = true`, fresh metadata, no forwarded_for, the parent's capabilities and deadline. Input and
   * output are in wire (JSON) form; see `invoke` below for a typed call.
   */
  readonly invoke: (name: string, input: unknown, options?: InvokeOptions) => Effect.Effect<unknown, CallError.CallError>
}

/** The context of one call. Frozen: only the dispatcher sets its fields (`internal` above all). */
export interface OperationContext {
  readonly operation: string
  readonly requestId: string
  readonly parentRequestId: Option.Option<string>
  /** Whose authority this call runs under (the caller, or the composing handler's authority). */
  readonly identity: Option.Option<Identity>
  /** The running handler's own composition authority. */
  readonly handlerIdentity: Option.Option<CompositionAuthority>
  /** Who the caller says it acts for; audit only, never used by access control. */
  readonly forwardedFor: Option.Option<Identity>
  readonly capabilities: Capabilities
  /** Per-call scratch space; never propagates to children. */
  readonly metadata: Map<string, unknown>
  readonly scopedEnv: ScopedEnv
  readonly env: OperationEnv
  readonly abortPolicy: AbortPolicy
  /** Epoch milliseconds (Effect `Clock`), shared by the whole call tree. */
  readonly deadline: Option.Option<number>
  /** `true` when this call was made by another handler, `false` when it came from a caller (wire or local). */
  readonly internal: boolean
}

/** Typed composition: encode `input` with the operation's schema, invoke it, decode the output. */
export const invoke = <IA, II, OA, OI>(
  ctx: OperationContext,
  operation: Operation<IA, II, OA, OI>,
  input: IA,
  options?: InvokeOptions
): Effect.Effect<OA, CallError.CallError> => call({ call: ctx.env.invoke }, operation, input, options)

/** Anything that calls operations by name with wire-form input and output (a connection, a registry). */
export interface Caller<Options> {
  readonly call: (name: string, input: unknown, options?: Options) => Effect.Effect<unknown, CallError.CallError>
}

/**
 * Typed remote call: encode `input` with the operation's schema, call it through `caller` (e.g. a connection), decode
 * the output (an output that does not match is INTERNAL, and so is one nested deeper than 64 levels: the remote
 * chose it, and decoding or describing it would recurse once per level).
 */
export const call = <IA, II, OA, OI, Options>(
  caller: Caller<Options>,
  operation: Operation<IA, II, OA, OI>,
  input: IA,
  options?: Options
): Effect.Effect<OA, CallError.CallError> =>
  Schema.encode(operation.input)(input).pipe(
    Effect.mapError((e) => CallError.invalidInput(`invalid input: ${e.message}`)),
    Effect.flatMap((encoded) => caller.call(operation.spec.name, encoded, options)),
    Effect.flatMap((output) =>
      Json.exceedsDepth(output)
        ? Effect.fail(CallError.internal(`invalid output from ${operation.spec.name}: ${Json.tooDeep("output")}`))
        : Effect.mapError(
          Schema.decodeUnknown(operation.output)(output),
          (e) => CallError.internal(`invalid output from ${operation.spec.name}: ${e.message}`)
        )
    )
  )

/** A capability by name. */
export const capability = (ctx: OperationContext, name: string): Option.Option<Redacted.Redacted<unknown>> =>
  Option.fromNullable(ctx.capabilities.get(name))
