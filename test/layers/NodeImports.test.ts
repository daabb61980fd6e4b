/**
 * The config's `imports`, reloaded live: a node started from a config file imports a REST API described by an
 * OpenAPI document that a real `node:http` server serves (its API key a vault-encrypted credential of the node's
 * store, sent in the header the import names); its handlers reach the imported operations through `ctx.env`; editing
 * the file adds and removes imports while the node runs; a broken import (a document that is not OpenAPI, an unknown
 * credential, an unreachable URL) is reported and leaves everything else as it was. An MCP server's tools (the SDK's
 * server) are imported the same way, its token a credential too, and re-exported only behind an access control.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Layer, Redacted, Schema, Stream } from "effect"
import * as fs from "node:fs/promises"
import * as Http from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import * as ConfigFile from "../../src/layers/ConfigFile.js"
import * as Node from "../../src/layers/Node.js"
import type { ImportInfo } from "../../src/peer/Imports.js"
import { ADMIN_SCOPE } from "../../src/schema/Identity.js"
import * as CredentialStore from "../../src/services/CredentialStore.js"
import * as IdentityStore from "../../src/services/IdentityStore.js"
import * as Operation from "../../src/services/Operation.js"
import * as Vault from "../../src/services/Vault.js"
import { listen } from "../shared/http.js"
import { mcpServer, TOKEN } from "../shared/mcp.js"

const KEY = "k3y-of-the-pets-api"

const document = (paths: Record<string, unknown>) => JSON.stringify({ openapi: "3.1.0", info: { title: "t", version: "1" }, servers: [{ url: "/api" }], paths })

const PETS = document({
  "/pets/{id}": {
    get: {
      operationId: "getPet",
      parameters: [{ name: "id", in: "path", required: true, schema: { type: "string" } }],
      responses: { "200": { description: "the pet", content: { "application/json": { schema: { type: "object" } } } }, "401": { description: "bad key" } }
    }
  }
})
/** A document whose operation would take the name of one of the node's own (`app/pet`). */
const SHADOW = document({
  "/pet": { get: { operationId: "pet", responses: { "200": { description: "not the node's" } } } }
})
const WEATHER = document({
  "/weather": { get: { operationId: "now", responses: { "200": { description: "now", content: { "application/json": {} } } } } }
})

/** The API: two documents, one that is not a document, and the routes they describe (pets needs the key). */
const api = listen(Http.createServer((req, res) => {
  const json = (status: number, body: unknown) => {
    res.writeHead(status, { "content-type": "application/json" })
    res.end(typeof body === "string" ? body : JSON.stringify(body))
  }
  const url = req.url ?? "/"
  if (url === "/pets.json") return json(200, PETS)
  if (url === "/weather.json") return json(200, WEATHER)
  if (url === "/app.json") return json(200, SHADOW)
  if (url === "/broken.json") return json(200, "{\"hello\": \"world\"}")
  if (url === "/api/weather") return json(200, { sky: "clear" })
  const pet = /^\/api\/pets\/([^/]+)$/.exec(url)
  if (pet !== null) return req.headers["x-api-key"] === KEY ? json(200, { id: pet[1], name: "rex" }) : json(401, { error: "bad key" })
  json(404, { error: "no such route" })
}))

/** The node's own operations: they compose the imported ones (which are Internal: not served on their own). */
const composed = [
  Operation.query({
    name: "app/pet",
    input: Schema.Struct({ id: Schema.String }),
    output: Schema.Unknown,
    handler: ({ id }, ctx) => ctx.env.invoke("pets/getPet", { id })
  }).with({ env: ["pets/getPet"] }),
  Operation.mutation({
    name: "app/double",
    input: Schema.Struct({ n: Schema.Number }),
    output: Schema.Unknown,
    handler: ({ n }, ctx) => ctx.env.invoke("math/add", { a: n, b: n })
    // Re-exported with an access control, the import checks whoever composes it too: this handler's authority.
  }).with({ env: ["math/add"], authority: Operation.authority("app", { scopes: ["math"] }) }),
  Operation.query({
    name: "app/weather",
    input: Schema.Unknown,
    output: Schema.Unknown,
    handler: (_, ctx) => ctx.env.invoke("weather/now", {})
  }).with({ env: ["weather/now"] })
]

const tempDir = Effect.acquireRelease(
  Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "alknet-imports-"))),
  (dir) => Effect.promise(() => fs.rm(dir, { recursive: true, force: true }))
)

const writeConfig = (file: string, imports: ReadonlyArray<Record<string, unknown>>) =>
  Effect.promise(() => fs.writeFile(file, JSON.stringify({ listen: "127.0.0.1:0", imports })))

/**
 * A node over the config file, with the API key and the MCP server's token stored (vault-encrypted) as the
 * credentials `pets-key` and `mcp-token`.
 */
const nodeFrom = (file: string) => {
  const base = Layer.mergeAll(Node.layerVault(), ConfigFile.layerConfig(file), IdentityStore.layerMemory(), CredentialStore.layerMemory)
  const storeKey = Layer.effectDiscard(Effect.gen(function*() {
    const vault = yield* Vault.Vault
    const store = yield* CredentialStore.CredentialStore
    yield* store.put("pets-key", yield* vault.encrypt(Redacted.make(KEY)))
    yield* store.put("mcp-token", yield* vault.encrypt(Redacted.make(TOKEN)))
  }))
  return Layer.provideMerge(Node.layerWith({ operations: composed }), Layer.provideMerge(storeKey, base))
}

/** Wait until the node's imports satisfy `ready` (each change of their status is checked; no clock involved). */
const importsUntil = (ready: (imports: ReadonlyArray<ImportInfo>) => boolean) =>
  Effect.flatMap(Node.Node, (node) =>
    node.imports.changes.pipe(Stream.filter(ready), Stream.runHead, Effect.map((found) => found._tag === "Some" ? found.value : [])))

const stateOf = (imports: ReadonlyArray<ImportInfo>) => Object.fromEntries(imports.map((i) => [i.namespace, i.state]))

const call = (name: string, input: unknown) => Effect.flatMap(Node.Node, (node) => node.graph.call(name, input))
const callError = (name: string, input: unknown) => Effect.flip(call(name, input))

describe("config imports, reloaded live", () => {
  it.live("a node started with an import calls it through a composed op; editing the file adds and removes imports", () =>
    Effect.gen(function*() {
      const base = yield* api
      const file = path.join(yield* tempDir, "config.json")
      const pets = { type: "openapi", namespace: "pets", url: `${base}/pets.json`, credential: "pets-key", auth: { type: "header", header: "X-API-Key" } }
      const weather = { type: "openapi", namespace: "weather", url: `${base}/weather.json` }
      yield* writeConfig(file, [pets])

      yield* Effect.gen(function*() {
        const node = yield* Node.Node
        yield* importsUntil((imports) => stateOf(imports).pets === "imported")
        // The API key came from the vault-encrypted credential, in the header the import names.
        expect(yield* call("app/pet", { id: "7" })).toEqual({ id: "7", name: "rex" })
        // Imported operations are Internal: reachable through ctx.env, not by a caller.
        expect(yield* callError("pets/getPet", { id: "7" })).toMatchObject({ code: "NOT_FOUND" })
        expect(node.source.lookup("pets/getPet")).toBeUndefined()
        expect(yield* callError("app/weather", {})).toMatchObject({ code: "NOT_FOUND" })

        // Add one: it is attached without a restart.
        yield* writeConfig(file, [pets, weather])
        yield* importsUntil((imports) => stateOf(imports).weather === "imported")
        expect(yield* call("app/weather", {})).toEqual({ sky: "clear" })
        expect(yield* call("app/pet", { id: "8" })).toEqual({ id: "8", name: "rex" })

        // Remove one: its operations are gone (NOT_FOUND), the other stays.
        yield* writeConfig(file, [weather])
        yield* importsUntil((imports) => stateOf(imports).pets === undefined)
        expect(yield* callError("app/pet", { id: "7" })).toMatchObject({ code: "NOT_FOUND", message: "operation not found: pets/getPet" })
        expect(yield* call("app/weather", {})).toEqual({ sky: "clear" })
        // An admin sees the imports in node/info.
        const info = yield* node.graph.call("node/info", {}, { identity: { id: "admin", scopes: [ADMIN_SCOPE], resources: {} } })
        expect((info as Node.NodeInfo).imports).toEqual([
          { namespace: "weather", type: "openapi", source: `${base}/weather.json`, state: "imported", operations: 1, last_error: null }
        ])
      }).pipe(Effect.provide(nodeFrom(file)))
    }).pipe(Effect.scoped))

  it.live("a broken import is reported and leaves the previous version and the other imports working", () =>
    Effect.gen(function*() {
      const base = yield* api
      const file = path.join(yield* tempDir, "config.json")
      const pets = { type: "openapi", namespace: "pets", url: `${base}/pets.json`, credential: "pets-key", auth: { type: "header", header: "X-API-Key" } }
      const weather = { type: "openapi", namespace: "weather", url: `${base}/weather.json` }
      yield* writeConfig(file, [pets, weather])

      yield* Effect.gen(function*() {
        yield* importsUntil((imports) => stateOf(imports).pets === "imported" && stateOf(imports).weather === "imported")

        yield* writeConfig(file, [
          { ...pets, url: `${base}/broken.json` }, // changed to a document that is not OpenAPI
          weather,
          { type: "openapi", namespace: "ghost", url: `${base}/weather.json`, credential: "nope" },
          { type: "openapi", namespace: "down", url: "http://127.0.0.1:1/openapi.json" },
          { type: "mcp", namespace: "gone", url: "http://127.0.0.1:1/mcp" },
          { type: "openapi", namespace: "app", url: `${base}/app.json` }
        ])
        const imports = yield* importsUntil((imports) =>
          imports.length === 6 && imports.every((i) => i.state !== "importing") && imports[0]!.last_error !== null)
        expect(imports.map((i) => [i.namespace, i.state])).toEqual([
          ["pets", "imported"],
          ["weather", "imported"],
          ["ghost", "failed"],
          ["down", "failed"],
          ["gone", "failed"],
          ["app", "failed"]
        ])
        const errors = Object.fromEntries(imports.map((i) => [i.namespace, i.last_error]))
        expect(errors.pets).toBe("not an OpenAPI document: no openapi version")
        expect(errors.weather).toBeNull()
        expect(errors.ghost).toBe("credential nope not found")
        expect(errors.down).toMatch(/^cannot fetch http:\/\/127\.0\.0\.1:1\/openapi\.json: /)
        expect(errors.gone).toMatch(/^cannot connect to MCP server http:\/\/127\.0\.0\.1:1\/mcp/)
        expect(errors.app).toBe("app/pet is one of this node's own operations")
        // The previous version of pets is still attached; weather never moved; the node serves as before.
        expect(yield* call("app/pet", { id: "9" })).toEqual({ id: "9", name: "rex" })
        expect(yield* call("app/weather", {})).toEqual({ sky: "clear" })
        expect(yield* call("node/ping", {})).toMatchObject({ pong: true })

        // The missing credential is stored; a reload (what SIGHUP does) retries what failed, and only that.
        const vault = yield* Vault.Vault
        yield* (yield* CredentialStore.CredentialStore).put("nope", yield* vault.encrypt(Redacted.make("unused")))
        yield* (yield* ConfigFile.ConfigFile).reload
        const retried = yield* importsUntil((imports) => imports.length === 6 && imports[2]!.state === "imported")
        expect(retried.map((i) => [i.namespace, i.state])).toEqual([
          ["pets", "imported"],
          ["weather", "imported"],
          ["ghost", "imported"],
          ["down", "failed"],
          ["gone", "failed"],
          ["app", "failed"]
        ])

        // Fixed in the file: the failed ones are tried again, and the rest are not touched.
        yield* writeConfig(file, [pets, weather, { type: "openapi", namespace: "ghost", url: `${base}/weather.json`, credential: "pets-key" }])
        const fixed = yield* importsUntil((imports) => imports.length === 3 && imports.every((i) => i.state === "imported" && i.last_error === null))
        expect(fixed.map((i) => i.namespace)).toEqual(["pets", "weather", "ghost"])
      }).pipe(Effect.provide(nodeFrom(file)))
    }).pipe(Effect.scoped))

  it.live("an MCP server's tools: composed through ctx.env, and re-exported only behind the import's access control", () =>
    Effect.gen(function*() {
      const url = yield* mcpServer(yield* Deferred.make<void>())
      const file = path.join(yield* tempDir, "config.json")
      yield* writeConfig(file, [{
        type: "mcp",
        namespace: "math",
        url,
        credential: "mcp-token",
        export_as: "external",
        access: { required_scopes: ["math"] }
      }])

      yield* Effect.gen(function*() {
        const [math] = yield* importsUntil((imports) => stateOf(imports).math === "imported")
        expect(math).toMatchObject({ type: "mcp", source: url, operations: 3, last_error: null })
        expect(yield* call("app/double", { n: 21 })).toEqual({ sum: 42 })
        // Re-exported: callers of the node reach it, but only those the import's access control lets through.
        const node = yield* Node.Node
        expect(node.source.lookup("math/add")).toBeDefined()
        expect(yield* callError("math/add", { a: 1, b: 2 })).toMatchObject({ code: "FORBIDDEN", message: "authentication required" })
        const caller = { identity: { id: "alice", scopes: ["math"], resources: {} } }
        expect(yield* node.graph.call("math/add", { a: 1, b: 2 }, caller)).toEqual({ sum: 3 })
        expect(yield* Effect.flip(node.graph.call("math/fail", {}, caller))).toMatchObject({ code: "MCP_TOOL_ERROR", message: "no can do" })
      }).pipe(Effect.provide(nodeFrom(file)))
    }).pipe(Effect.scoped))
})
