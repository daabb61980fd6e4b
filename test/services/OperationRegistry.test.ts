import { describe, expect, it, layer } from "@effect/vitest"
import { Effect, Option, Schema, Stream } from "effect"
import * as CallError from "../../src/errors/CallError.js"
import type { Identity } from "../../src/schema/Identity.js"
import { OperationSpecJson } from "../../src/schema/OperationSpec.js"
import * as Operation from "../../src/services/Operation.js"
import * as OperationRegistry from "../../src/services/OperationRegistry.js"
import { makePair, who } from "../call/harness.js"

const Path = Schema.Struct({ path: Schema.String.annotations({ description: "file path" }) })
const readFile = Operation.query({
  name: "/fs/readFile",
  description: "Read a file.",
  input: Path,
  output: Schema.Struct({ content: Schema.String }),
  errors: [Operation.error({ code: "FILE_NOT_FOUND", description: "no such file", schema: Path, httpStatus: 404 })],
  access: { requiredScopes: ["fs"], resourceType: "fs", resourceAction: "read" },
  handler: ({ path }) => Effect.succeed({ content: `contents of ${path}` })
})
const writeFile = Operation.mutation({
  name: "fs/writeFile",
  input: Schema.Struct({ path: Schema.String, content: Schema.String }),
  output: Schema.Null,
  access: { requiredScopesAny: ["fs:write", "admin"] },
  handler: () => Effect.succeed(null)
})
const watch = Operation.subscription({
  name: "fs/watch",
  input: Path,
  output: Schema.String,
  handler: ({ path }) => Stream.make(`${path}: created`, `${path}: changed`)
})
const internalOp = Operation.query({
  name: "fs/compact",
  visibility: "internal",
  input: Schema.Unknown,
  output: Schema.Null,
  handler: () => Effect.succeed(null)
})
const ping = Operation.query({ name: "sys/ping", input: Schema.Unknown, output: Schema.String, handler: () => Effect.succeed("pong") })

const all = [readFile, writeFile, watch, internalOp, ping]
const reader = who("reader", ["fs"], { fs: ["read"] })

describe("AccessControl.check", () => {
  const check = (acl: Operation.AccessControlInput, identity: Option.Option<Identity>) =>
    Operation.check(Operation.accessControl(acl), identity)?.message
  it("allows anyone, even without identity, when there are no restrictions", () => {
    expect(check({}, Option.none())).toBeUndefined()
  })
  it("requires an identity for anything else", () => {
    expect(check({ requiredScopes: ["a"] }, Option.none())).toBe("authentication required")
    expect(check({ resourceType: "fs" }, Option.none())).toBe("authentication required")
  })
  it("checks all required scopes, any-of scopes and resources with the exact messages", () => {
    const id = who("x", ["a", "b"], { fs: ["read"], net: [] })
    expect(check({ requiredScopes: ["a", "b"] }, id)).toBeUndefined()
    expect(check({ requiredScopes: ["a", "c"] }, id)).toBe("missing required scope: c")
    expect(check({ requiredScopesAny: ["z", "b"] }, id)).toBeUndefined()
    expect(check({ requiredScopesAny: ["y", "z"] }, id)).toBe("missing required scope (any of: y, z)")
    expect(check({ resourceType: "fs", resourceAction: "read" }, id)).toBeUndefined()
    expect(check({ resourceType: "fs", resourceAction: "write" }, id)).toBe("missing resource: fs/write")
    expect(check({ resourceType: "net" }, id)).toBeUndefined() // granted, with no actions
    expect(check({ resourceType: "gpu" }, id)).toBe("missing resource: gpu")
    expect(check({ resourceType: "toString" }, id)).toBe("missing resource: toString") // no prototype leaks
  })
})

describe("registrations", () => {
  it("normalizes names, derives the namespace and rejects malformed names", () => {
    expect(readFile.spec.name).toBe("fs/readFile")
    expect(readFile.spec.namespace).toBe("fs")
    for (const name of ["noslash", "/", "a/", "a b/c"]) {
      expect(() => Operation.query({ name, input: Schema.Unknown, output: Schema.Unknown, handler: Effect.succeed }))
        .toThrow(TypeError)
    }
  })
  it("the handler kind must match the op type; imported operations are leaves; Session ones are Internal", () => {
    const spec = Operation.makeSpec("subscription", { name: "a/b", input: Schema.Unknown, output: Schema.Unknown })
    expect(() => Operation.registration(spec, { _tag: "Unary", run: () => Effect.succeed(1) })).toThrow(/streaming/)
    expect(() => ping.with({ provenance: "FromCall", authority: Operation.authority("x") })).toThrow(/leaves/)
    expect(() => ping.with({ provenance: "FromMCP", env: ["a/b"] })).toThrow(/leaves/)
    expect(ping.with({ provenance: "FromCall" }).provenance).toBe("FromCall")
    expect(ping.with({ provenance: "FromCall" }).spec.visibility).toBe("internal") // imported: Internal by default
    expect(ping.with({ provenance: "FromOpenAPI", visibility: "external" }).spec.visibility).toBe("external")
    expect(ping.with({ provenance: "Session" }).spec.visibility).toBe("internal")
    expect(ping.spec.visibility).toBe("external")
    expect(Option.isNone(ping.authority)).toBe(true)
    expect(ping.scopedEnv.allows("sys/ping")).toBe(false) // none = may invoke nothing
  })
  it.scoped("duplicate and reserved names are refused when the registry is built", () =>
    Effect.gen(function*() {
      const duplicate = yield* Effect.flip(OperationRegistry.make([ping, ping]))
      expect(duplicate).toMatchObject({ reason: "DuplicateName", message: "operation sys/ping is registered twice" })
      const reserved = Operation.query({ name: "services/list", input: Schema.Unknown, output: Schema.Unknown, handler: Effect.succeed })
      expect((yield* Effect.flip(OperationRegistry.make([reserved]))).reason).toBe("ReservedName")
    }))
})

layer(OperationRegistry.layer(all))("OperationRegistry", (it) => {
  it.effect("is immutable and lists discovery operations first", () =>
    Effect.gen(function*() {
      const registry = yield* OperationRegistry.OperationRegistry
      expect(registry.registrations.map((r) => r.spec.name)).toEqual([
        "services/list",
        "services/schema",
        "fs/readFile",
        "fs/writeFile",
        "fs/watch",
        "fs/compact",
        "sys/ping"
      ])
      expect(Object.isFrozen(registry.registrations)).toBe(true)
      expect(Option.isSome(registry.lookup("/fs/readFile"))).toBe(true)
    }))

  it.effect("invoke runs a root call with the access check, and subscribe streams", () =>
    Effect.gen(function*() {
      const registry = yield* OperationRegistry.OperationRegistry
      expect(yield* registry.invoke("fs/readFile", { path: "/a" }, { identity: reader })).toEqual({
        content: "contents of /a"
      })
      const denied = yield* Effect.flip(registry.invoke("fs/readFile", { path: "/a" }))
      expect(denied.message).toBe("authentication required")
      const items = yield* Stream.runCollect(registry.subscribe("/fs/watch", { path: "/b" }))
      expect([...items]).toEqual(["/b: created", "/b: changed"])
    }))

  it.effect("the dispatch path must match the op type: INVALID_OPERATION_TYPE (after NOT_FOUND, before FORBIDDEN)", () =>
    Effect.gen(function*() {
      const registry = yield* OperationRegistry.OperationRegistry
      const asCall = yield* Effect.flip(registry.invoke("fs/watch", { path: "/b" }))
      expect(asCall.code).toBe("INVALID_OPERATION_TYPE")
      const asSubscription = yield* Effect.flip(Stream.runDrain(registry.subscribe("fs/readFile", { path: "/a" })))
      expect(asSubscription.code).toBe("INVALID_OPERATION_TYPE") // even though the caller would be FORBIDDEN
      expect((yield* Effect.flip(registry.invoke("fs/nope", null))).code).toBe("NOT_FOUND")
      expect((yield* Effect.flip(registry.invoke("fs/compact", null))).message).toBe("operation not found: fs/compact")
    }))

  it.effect("services/list shows the External operations the caller passes", () =>
    Effect.gen(function*() {
      const registry = yield* OperationRegistry.OperationRegistry
      const names = (identity: Option.Option<Identity>) =>
        Effect.map(
          registry.invoke("services/list", {}, { identity }),
          (out) => (out as { operations: Array<{ name: string }> }).operations.map((o) => o.name)
        )
      expect(yield* names(Option.none())).toEqual(["services/list", "services/schema", "fs/watch", "sys/ping"])
      expect(yield* names(reader)).toEqual(["services/list", "services/schema", "fs/readFile", "fs/watch", "sys/ping"])
      expect(yield* names(who("admin", ["admin"]))).toEqual([
        "services/list",
        "services/schema",
        "fs/writeFile",
        "fs/watch",
        "sys/ping"
      ])
      const list = yield* registry.invoke("services/list", null)
      expect((list as { operations: Array<unknown> }).operations).toContainEqual({
        name: "fs/watch",
        namespace: "fs",
        op_type: "subscription"
      })
    }))

  it.effect("services/schema returns the full spec in snake_case with JSON Schemas", () =>
    Effect.gen(function*() {
      const registry = yield* OperationRegistry.OperationRegistry
      const spec = Schema.decodeUnknownSync(OperationSpecJson)(
        yield* registry.invoke("services/schema", { name: "/fs/readFile" }, { identity: reader })
      )
      expect(spec).toMatchObject({
        name: "fs/readFile",
        namespace: "fs",
        op_type: "query",
        visibility: "external",
        description: "Read a file.",
        error_schemas: [{ code: "FILE_NOT_FOUND", description: "no such file", http_status: 404 }],
        access_control: {
          required_scopes: ["fs"],
          required_scopes_any: [],
          resource_type: "fs",
          resource_action: "read"
        }
      })
      expect(spec.input_schema).toMatchObject({
        type: "object",
        required: ["path"],
        properties: { path: { type: "string", description: "file path" } }
      })
      expect(spec.output_schema).toMatchObject({ type: "object", required: ["content"] })
      expect(spec.error_schemas[0]!.schema).toMatchObject({ type: "object", required: ["path"] })
      const open = yield* registry.invoke("services/schema", { name: "sys/ping" })
      expect(open).toMatchObject({ access_control: { resource_type: null, resource_action: null }, error_schemas: [] })
    }))

  it.effect("services/schema: Internal, forbidden and unknown operations are all NOT_FOUND; a missing name is INVALID_INPUT", () =>
    Effect.gen(function*() {
      const registry = yield* OperationRegistry.OperationRegistry
      const schemaOf = (name: unknown, identity = Option.none<Identity>()) =>
        Effect.flip(registry.invoke("services/schema", name === undefined ? {} : { name }, { identity }))
      for (const name of ["fs/compact", "fs/readFile", "fs/nothing"]) {
        const error = yield* schemaOf(name)
        expect(error.toPayload()).toEqual(CallError.notFound(name).toPayload())
      }
      expect((yield* schemaOf(undefined)).toPayload()).toEqual({
        code: "INVALID_INPUT",
        message: "missing required field: name",
        retryable: false
      })
    }))
})

describe("discovery over the wire", () => {
  it.scoped("a peer discovers what it may call and nothing else", () =>
    Effect.gen(function*() {
      const { client, expectIdle } = yield* makePair(all, { server: { identity: reader } })
      const list = (yield* client.call("/services/list", {})) as { operations: Array<{ name: string; op_type: string }> }
      expect(list.operations.map((o) => `${o.name}:${o.op_type}`)).toEqual([
        "services/list:query",
        "services/schema:query",
        "fs/readFile:query",
        "fs/watch:subscription",
        "sys/ping:query"
      ])
      expect(yield* client.call("services/schema", { name: "fs/watch" })).toMatchObject({ op_type: "subscription" })
      expect((yield* Effect.flip(client.call("services/schema", { name: "fs/writeFile" }))).code).toBe("NOT_FOUND")
      yield* expectIdle
    }))
})
