/**
 * The curated operation registry (SPEC §6): the `Local` operations a node is built with, plus the discovery
 * operations. Immutable once built: overlays (imported and session operations) live in their own scopes and are
 * layered on top by the peer graph, never written into this registry.
 *
 * `invoke` / `subscribe` run an in-process root call with the full dispatch of SPEC §5 (an HTTP gateway, a CLI, a
 * test): Internal operations are NOT_FOUND, a subscription called with `invoke` (or the reverse) is
 * INVALID_OPERATION_TYPE, access control runs against the identity given, the input is validated.
 */
import { Context, Data, Duration, Effect, Layer, Option, Stream } from "effect"
import type { Scope } from "effect"
import * as Discovery from "../call/Discovery.js"
import * as Dispatcher from "../call/Dispatcher.js"
import type { OperationSource } from "../call/Dispatcher.js"
import type * as CallError from "../errors/CallError.js"
import type { Identity } from "../schema/Identity.js"
import type { HandlerRegistration } from "./Operation.js"

export class RegistryError extends Data.TaggedError("RegistryError")<{
  readonly reason: "DuplicateName" | "ReservedName"
  readonly message: string
}> {}

export interface LocalCallOptions {
  /** Who is calling (default: nobody, which passes only open access controls). */
  readonly identity?: Identity | Option.Option<Identity>
  /** Audit only; never grants anything. */
  readonly forwardedFor?: Identity
  /** The call's deadline from now (default 30 s for queries and mutations, none for subscriptions). */
  readonly timeout?: Duration.DurationInput
}

/** An in-process root call (a fresh request id) from local call options. */
export const localRequest = (name: string, input: unknown, options: LocalCallOptions = {}): Dispatcher.RootRequest => ({
  requestId: crypto.randomUUID(),
  operation: name,
  input,
  identity: options.identity === undefined
    ? Option.none()
    : Option.isOption(options.identity)
    ? options.identity
    : Option.some(options.identity),
  forwardedFor: Option.fromNullable(options.forwardedFor),
  timeout: options.timeout === undefined ? undefined : Duration.decode(options.timeout)
})

export class OperationRegistry extends Context.Tag("alknet/OperationRegistry")<OperationRegistry, {
  /** Every registration, discovery operations included, in registration order. */
  readonly registrations: ReadonlyArray<HandlerRegistration>
  /** A registration by name (a leading slash is accepted). */
  readonly lookup: (name: string) => Option.Option<HandlerRegistration>
  /** The registry as a source for connections and dispatchers. */
  readonly source: OperationSource
  /** A root query or mutation, dispatched as SPEC §5. Input and output in wire (JSON) form. */
  readonly invoke: (
    name: string,
    input: unknown,
    options?: LocalCallOptions
  ) => Effect.Effect<unknown, CallError.CallError>
  /** A root subscription, dispatched as SPEC §5. */
  readonly subscribe: (
    name: string,
    input: unknown,
    options?: LocalCallOptions
  ) => Stream.Stream<unknown, CallError.CallError>
}>() {}

/** A source over a fixed list of registrations. */
export const sourceOf = (registrations: Iterable<HandlerRegistration>): OperationSource => {
  const byName = new Map<string, HandlerRegistration>()
  for (const registration of registrations) byName.set(registration.spec.name, registration)
  const list = [...byName.values()]
  return { lookup: (name) => byName.get(name.charCodeAt(0) === 47 ? name.slice(1) : name), list: () => list }
}

/** Build the curated registry. Duplicate names and the reserved discovery names are rejected. */
/** Registry options: the default deadline of root calls, and the nesting limit of inputs (default 64 levels). */
export interface Options {
  readonly defaultTimeout?: Duration.DurationInput
  readonly maxInputDepth?: number
}

export const make = (
  registrations: Iterable<HandlerRegistration>,
  options: Options = {}
): Effect.Effect<OperationRegistry["Type"], RegistryError, Scope.Scope> =>
  Effect.gen(function*() {
    const seen = new Set<string>()
    for (const { spec } of registrations) {
      if (spec.name === Discovery.LIST || spec.name === Discovery.SCHEMA) {
        return yield* new RegistryError({ reason: "ReservedName", message: `${spec.name} is a reserved operation name` })
      }
      if (seen.has(spec.name)) {
        return yield* new RegistryError({ reason: "DuplicateName", message: `operation ${spec.name} is registered twice` })
      }
      seen.add(spec.name)
    }
    const source = Discovery.withDiscovery(sourceOf(registrations))
    const all = Object.freeze([...source.list()])
    const dispatcher = yield* Dispatcher.make({
      source,
      ...(options.defaultTimeout === undefined ? {} : { defaultTimeout: options.defaultTimeout }),
      ...(options.maxInputDepth === undefined ? {} : { maxInputDepth: options.maxInputDepth })
    })
    return OperationRegistry.of({
      registrations: all,
      lookup: (name) => Option.fromNullable(source.lookup(name)),
      source,
      invoke: Effect.fn("OperationRegistry.invoke")(function*(name, input, callOptions) {
        const prepared = yield* dispatcher.prepare(localRequest(name, input, callOptions), "unary")
        return yield* prepared._tag === "Unary" ? prepared.run : Effect.dieMessage("unreachable")
      }),
      subscribe: (name, input, callOptions) =>
        Stream.unwrap(Effect.map(
          dispatcher.prepare(localRequest(name, input, callOptions), "streaming"),
          (prepared) => prepared._tag === "Streaming" ? prepared.run : Stream.dieMessage("unreachable")
        ))
    })
  })

/** The registry as a layer. */
export const layer = (
  registrations: Iterable<HandlerRegistration>,
  options?: Options
): Layer.Layer<OperationRegistry, RegistryError> => Layer.scoped(OperationRegistry, make(registrations, options))
