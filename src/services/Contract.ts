/**
 * Operations as contracts (SPEC §6): a contract is what a caller and a server agree on — name, type, input and output
 * schemas, declared errors, access control, description — and carries no code. A group of contracts gets its
 * handlers from a layer, so what the handlers need flows into that layer's requirements; a typed client is derived
 * from the contracts alone (as `@effect/rpc`'s `RpcGroup.toLayer` and `RpcClient.make`).
 *
 * ```ts
 * class NotFriendly extends Schema.TaggedError<NotFriendly>()("NotFriendly", { name: Schema.String },
 *   Contract.declare({ code: "NOT_FRIENDLY", httpStatus: 403 })) {}
 *
 * const Greeter = Contract.group({
 *   greet: Contract.query("demo/greet", { input: Schema.Struct({ name: Schema.String }), output: Schema.String, errors: [NotFriendly] })
 * })
 *
 * const GreeterLive = Greeter.toLayer(Effect.gen(function*() {
 *   const db = yield* Db                       // the layer requires Db
 *   return { greet: ({ name }) => db.friendly(name) ? Effect.succeed(`hello, ${name}`) : Effect.fail(new NotFriendly({ name })) }
 * }))
 *
 * const client = Contract.client(Greeter, connection)
 * client.greet({ name: "Ada" })               // Effect<string, NotFriendly | CallError>
 * ```
 *
 * Declared errors are `Schema.TaggedError` classes annotated with their wire `code` (`Contract.declare`). A handler
 * may fail with them or with a `CallError` (e.g. from `ctx.env.invoke`); any other error type does not compile. On
 * the wire a declared error is `call.error {code, message, details}` with `details` its encoded fields; the typed
 * client decodes it back into the class. `OperationRegistry` / `Node.layer` serve the groups through
 * `Contract.layerRegistry(...groups)`.
 */
import { Context, Effect, Layer, Option, Schema, SchemaAST, Stream } from "effect"
import * as CallError from "../errors/CallError.js"
import * as Json from "../schema/Json.js"
import * as Operation from "./Operation.js"
import type { HandlerRegistration, OperationContext, RegistrationOptions } from "./Operation.js"
import * as OperationRegistry from "./OperationRegistry.js"

// ---------------------------------------------------------------------------------------------------------------
// Declared errors

/** Annotation: the wire `code` of a declared error class. */
export const CodeId: unique symbol = Symbol.for("alknet/Contract/code")
/** Annotation: the HTTP status a gateway answers a declared error with. */
export const HttpStatusId: unique symbol = Symbol.for("alknet/Contract/httpStatus")

/** The annotations that declare an error class's wire code (and optional HTTP status and description). */
export const declare = (options: {
  readonly code: string
  readonly httpStatus?: number
  readonly description?: string
}): Schema.Annotations.Schema<any> => ({
  [CodeId]: options.code,
  ...(options.httpStatus === undefined ? {} : { [HttpStatusId]: options.httpStatus }),
  ...(options.description === undefined ? {} : { description: options.description })
})

/** A declared error: a schema (a `Schema.TaggedError` class) whose instances a handler may fail with. */
export type DeclaredError = Schema.Schema<any, any, never>

const annotation = <A>(schema: Schema.Schema.Any, id: symbol): Option.Option<A> => {
  const ast = schema.ast
  const found = SchemaAST.getAnnotation<A>(ast, id)
  if (Option.isSome(found) || ast._tag !== "Transformation") return found
  return Option.orElse(SchemaAST.getAnnotation<A>(ast.to, id), () => SchemaAST.getAnnotation<A>(ast.from, id))
}

const definitionOf = (schema: DeclaredError): Operation.ErrorDefinition => {
  const code = annotation<string>(schema, CodeId)
  if (Option.isNone(code)) {
    throw new TypeError(`a declared error needs its wire code: annotate it with Contract.declare({ code })`)
  }
  const description = annotation<string>(schema, SchemaAST.DescriptionAnnotationId)
  const httpStatus = annotation<number>(schema, HttpStatusId)
  return Operation.error({
    code: code.value,
    description: Option.getOrElse(description, () => code.value),
    schema,
    ...(Option.isSome(httpStatus) ? { httpStatus: httpStatus.value } : {})
  })
}

// ---------------------------------------------------------------------------------------------------------------
// Contracts

export type Kind = "query" | "mutation" | "subscription"

/** An operation's contract: no code, only what both sides agree on. */
export interface Contract<
  K extends Kind,
  I extends Schema.Schema.Any,
  O extends Schema.Schema.Any,
  E extends ReadonlyArray<DeclaredError>
> {
  readonly kind: K
  /** `namespace/op` */
  readonly name: string
  readonly input: I
  readonly output: O
  readonly errors: E
  /** The spec the registry serves (`services/schema`), errors and access control included. */
  readonly spec: Operation.OperationSpec
}

export type Any = Contract<Kind, Schema.Schema.Any, Schema.Schema.Any, ReadonlyArray<DeclaredError>>

export interface ContractOptions<I, O, E> {
  readonly input: I
  readonly output: O
  /** Declared domain errors: `Schema.TaggedError` classes annotated with `Contract.declare({ code })`. */
  readonly errors?: E
  readonly description?: string
  readonly access?: Operation.AccessControlInput
  /** Default `external`. */
  readonly visibility?: Operation.Visibility
}

const make = <K extends Kind>(kind: K) =>
<
  I extends Schema.Schema<any, any, never>,
  O extends Schema.Schema<any, any, never>,
  const E extends ReadonlyArray<DeclaredError> = readonly []
>(name: string, options: ContractOptions<I, O, E>): Contract<K, I, O, E> => {
  const errors = (options.errors ?? []) as unknown as E
  const spec = Operation.makeSpec(kind, {
    name,
    input: options.input,
    output: options.output,
    errors: errors.map(definitionOf),
    ...(options.description === undefined ? {} : { description: options.description }),
    ...(options.access === undefined ? {} : { access: options.access }),
    ...(options.visibility === undefined ? {} : { visibility: options.visibility })
  })
  return Object.freeze({ kind, name: spec.name, input: options.input, output: options.output, errors, spec })
}

/** A read-only request/response contract. */
export const query = make("query")
/** A request/response contract with effects. */
export const mutation = make("mutation")
/** A streaming contract: items, then completion. */
export const subscription = make("subscription")

/** The errors a contract's handler may fail with and its client may see (besides `CallError`). */
export type ErrorOf<C extends Any> = Schema.Schema.Type<C["errors"][number]>

// ---------------------------------------------------------------------------------------------------------------
// Handlers

/** What a handler of contract `C` may be: declared errors or `CallError` only; any requirements (see `toLayer`). */
export type HandlerOf<C extends Any> = C["kind"] extends "subscription" ? (
    input: Schema.Schema.Type<C["input"]>,
    ctx: OperationContext
  ) => Stream.Stream<Schema.Schema.Type<C["output"]>, ErrorOf<C> | CallError.CallError, any>
  : (
    input: Schema.Schema.Type<C["input"]>,
    ctx: OperationContext
  ) => Effect.Effect<Schema.Schema.Type<C["output"]>, ErrorOf<C> | CallError.CallError, any>

/** One handler per contract of a group, by the group's keys. */
export type HandlersFrom<Cs extends Record<string, Any>> = { readonly [K in keyof Cs]: HandlerOf<Cs[K]> }

/** What a set of handlers requires when they run. */
export type HandlersContext<H> = {
  [K in keyof H]: H[K] extends (...args: ReadonlyArray<any>) => Effect.Effect<any, any, infer R> ? R
    : H[K] extends (...args: ReadonlyArray<any>) => Stream.Stream<any, any, infer R> ? R
    : never
}[keyof H]

// ---------------------------------------------------------------------------------------------------------------
// Groups

/** The registrations a group's handler layer provides (the group is the identifier). */
export interface Registrations {
  readonly registrations: ReadonlyArray<HandlerRegistration>
}

export interface Group<Cs extends Record<string, Any>> {
  readonly contracts: Cs
  /** Where a handler layer puts the group's registrations. */
  readonly tag: Context.Tag<Group<Cs>, Registrations>
  /**
   * The handlers as a layer: `build` is the handlers, or an Effect producing them (reading services with `yield*`).
   * The layer requires what `build` requires and what the handlers require when they run (captured at build).
   * `options` registers a handler with an authority, env or capabilities (SPEC §6–§7).
   */
  readonly toLayer: <H extends HandlersFrom<Cs>, EB = never, RB = never>(
    build: H | Effect.Effect<H, EB, RB>,
    options?: { readonly [K in keyof Cs]?: RegistrationOptions }
  ) => Layer.Layer<Group<Cs>, EB, Exclude<RB | HandlersContext<H>, never>>
}

let groups = 0

/** Build what a declared error or a CallError becomes for the dispatcher; anything else is a defect (a bug). */
const toCallError = (contract: Any, definitions: ReadonlyArray<Operation.ErrorDefinition>) => (error: unknown) => {
  if (error instanceof CallError.CallError) return Effect.fail(error)
  for (const definition of definitions) {
    if (definition.schema !== undefined && Schema.is(definition.schema)(error)) {
      const message = typeof (error as { message?: unknown }).message === "string" &&
          (error as { message: string }).message !== ""
        ? (error as { message: string }).message
        : definition.code
      // The dispatcher encodes `details` with the declared schema before it goes on the wire.
      return Effect.fail(CallError.domain(definition.code, message, error))
    }
  }
  return Effect.die(new Error(`operation ${contract.name} failed with an undeclared error`))
}

/** A group of contracts, by the names its handlers and its client use. */
export const group = <const Cs extends Record<string, Any>>(contracts: Cs): Group<Cs> => {
  const names = Object.values(contracts).map((c) => c.name)
  const tag = Context.GenericTag<Group<Cs>, Registrations>(`alknet/Contract/${names.join(",")}#${++groups}`)
  const self: Group<Cs> = {
    contracts,
    tag,
    toLayer: (build, options) =>
      Layer.effect(
        tag,
        Effect.gen(function*() {
          const handlers = (Effect.isEffect(build) ? yield* build : build) as Record<string, (...args: Array<any>) => any>
          const context = yield* Effect.context<any>()
          const registrations = Object.entries(contracts).map(([key, contract]): HandlerRegistration => {
            const handler = handlers[key]!
            const fail = toCallError(contract, contract.spec.errors)
            const registrationOptions = (options as Record<string, RegistrationOptions> | undefined)?.[key] ?? {}
            return Operation.registration(
              contract.spec,
              contract.kind === "subscription"
                ? {
                  _tag: "Streaming",
                  run: (input, ctx) =>
                    Stream.provideContext(
                      Stream.catchAll(handler(input, ctx) as Stream.Stream<unknown, unknown, any>, (e) =>
                        Stream.fromEffect(fail(e))),
                      context
                    )
                }
                : {
                  _tag: "Unary",
                  run: (input, ctx) =>
                    Effect.provide(
                      Effect.catchAll(handler(input, ctx) as Effect.Effect<unknown, unknown, any>, fail),
                      context
                    )
                },
              registrationOptions
            )
          })
          return { registrations }
        })
      ) as any
  }
  return self
}

/** The groups' registrations as the node's `OperationRegistry` (duplicate or reserved names fail the layer). */
export const layerRegistry = <const Gs extends ReadonlyArray<Group<any>>>(
  ...groups: Gs
): Layer.Layer<OperationRegistry.OperationRegistry, OperationRegistry.RegistryError, Gs[number]> =>
  Layer.scoped(
    OperationRegistry.OperationRegistry,
    Effect.flatMap(
      Effect.forEach(groups, (g) => g.tag as Context.Tag<any, Registrations>),
      (all) => OperationRegistry.make(all.flatMap((r) => r.registrations))
    )
  ) as any

// ---------------------------------------------------------------------------------------------------------------
// Typed client

/** What a typed client calls through: a connection (or anything with the same `call` / `subscribe`). */
export interface Caller<Options> {
  readonly call: (name: string, input: unknown, options?: Options) => Effect.Effect<unknown, CallError.CallError>
  readonly subscribe: (name: string, input: unknown, options?: Options) => Stream.Stream<unknown, CallError.CallError>
}

export type ClientMethod<C extends Any, Options> = C["kind"] extends "subscription" ? (
    input: Schema.Schema.Type<C["input"]>,
    options?: Options
  ) => Stream.Stream<Schema.Schema.Type<C["output"]>, ErrorOf<C> | CallError.CallError>
  : (
    input: Schema.Schema.Type<C["input"]>,
    options?: Options
  ) => Effect.Effect<Schema.Schema.Type<C["output"]>, ErrorOf<C> | CallError.CallError>

export type Client<Cs extends Record<string, Any>, Options> = { readonly [K in keyof Cs]: ClientMethod<Cs[K], Options> }

/** A remote declared error decoded back into its class; a code not declared (or bad details) stays a `CallError`. */
const fromCallError = (contract: Any) => (error: CallError.CallError): Effect.Effect<never, unknown> => {
  const definition = contract.spec.errors.find((d) => d.code === error.code)
  if (definition === undefined || definition.schema === undefined || Json.exceedsDepth(error.details)) {
    return Effect.fail(error)
  }
  return Effect.flatMap(
    Effect.orElseSucceed(Schema.decodeUnknown(definition.schema)(error.details), () => error),
    Effect.fail
  )
}

const encodeInput = (contract: Any, input: unknown) =>
  Effect.mapError(
    Schema.encodeUnknown(contract.input as Schema.Schema<unknown, unknown>)(input),
    (e) => CallError.invalidInput(`invalid input: ${e.message}`)
  )

const decodeOutput = (contract: Any) => (output: unknown) =>
  Json.exceedsDepth(output)
    ? Effect.fail(CallError.internal(`invalid output from ${contract.name}: ${Json.tooDeep("output")}`))
    : Effect.mapError(
      Schema.decodeUnknown(contract.output as Schema.Schema<unknown, unknown>)(output),
      (e) => CallError.internal(`invalid output from ${contract.name}: ${e.message}`)
    )

/**
 * A typed client of a group over `caller` (e.g. a `CallClient` connection), from the contracts alone: each method
 * encodes its input, calls, and decodes the output or the declared error. Keep `caller.call(name, input)` for
 * dynamic use (discovery, imported operations).
 */
export const client = <Cs extends Record<string, Any>, Options>(
  group: Group<Cs>,
  caller: Caller<Options>
): Client<Cs, Options> => {
  const methods: Record<string, unknown> = {}
  for (const [key, contract] of Object.entries(group.contracts)) {
    const typed = fromCallError(contract)
    methods[key] = contract.kind === "subscription"
      ? (input: unknown, options?: Options) =>
        Stream.unwrap(Effect.map(encodeInput(contract, input), (encoded) =>
          caller.subscribe(contract.name, encoded, options).pipe(
            Stream.mapEffect(decodeOutput(contract)),
            Stream.catchAll((e) => Stream.fromEffect(e instanceof CallError.CallError ? typed(e) : Effect.fail(e)))
          )))
      : (input: unknown, options?: Options) =>
        encodeInput(contract, input).pipe(
          Effect.flatMap((encoded) => caller.call(contract.name, encoded, options)),
          Effect.catchAll(typed),
          Effect.flatMap(decodeOutput(contract))
        )
  }
  return methods as Client<Cs, Options>
}

/**
 * Typed composition from a handler: invoke the contract's operation as a child of the current call (`ctx.env.invoke`,
 * SPEC §7) and decode its output or its declared error.
 */
export const invoke = <C extends Any>(
  ctx: OperationContext,
  contract: C,
  input: Schema.Schema.Type<C["input"]>,
  options?: Operation.InvokeOptions
): Effect.Effect<Schema.Schema.Type<C["output"]>, ErrorOf<C> | CallError.CallError> =>
  encodeInput(contract, input).pipe(
    Effect.flatMap((encoded) => ctx.env.invoke(contract.name, encoded, options)),
    Effect.catchAll(fromCallError(contract)),
    Effect.flatMap(decodeOutput(contract))
  ) as Effect.Effect<Schema.Schema.Type<C["output"]>, ErrorOf<C> | CallError.CallError>
