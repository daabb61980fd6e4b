/**
 * Outbound peers in one process: a worker node (`Node.layerMemory`, QUIC on 127.0.0.1) and a head graph whose links
 * follow a config held in a `SubscriptionRef` — the import rule, a bearer token from the credential store, a missing
 * credential, and entries changed and removed while running.
 */
import { expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Redacted, Schedule, Schema, SubscriptionRef } from "effect"
import * as Dialers from "../../src/layers/Dialers.js"
import * as Node from "../../src/layers/Node.js"
import * as Composite from "../../src/peer/Composite.js"
import * as Outbound from "../../src/peer/Outbound.js"
import { OutboundPeer } from "../../src/schema/Config.js"
import * as CredentialStore from "../../src/services/CredentialStore.js"
import * as Operation from "../../src/services/Operation.js"
import * as OperationRegistry from "../../src/services/OperationRegistry.js"
import * as Tls from "../../src/services/Tls.js"
import * as Vault from "../../src/services/Vault.js"

const echo = Operation.query({
  name: "demo/echo",
  input: Schema.Unknown,
  output: Schema.Unknown,
  handler: (input) => Effect.succeed(input)
})
const scoped = Operation.query({
  name: "ops/secret",
  input: Schema.Unknown,
  output: Schema.String,
  access: { requiredScopes: ["ops"] },
  handler: () => Effect.succeed("s3cret")
})

const entry = (e: typeof OutboundPeer.Encoded) => Schema.decodeSync(OutboundPeer)(e)

/** Retry until the graph reaches the state (links connect on their own fibers). */
const eventually = <A>(check: Effect.Effect<A, string>) =>
  Effect.retry(check, Schedule.spaced("20 millis").pipe(Schedule.upTo("10 seconds")))

it.live("links follow the config: import rule, token credential, a missing credential, change and removal", () =>
  Effect.gen(function*() {
    const workerContext = yield* Layer.build(Node.layerMemory({
      operations: [echo, scoped],
      config: { api_keys: [] }
    }))
    const worker = Context.get(workerContext, Node.Node)
    const quic = worker.transports[0]!.address

    // The head: a graph over its own registry, the vault and credential store the links read tokens from.
    const vault = yield* Vault.Vault
    yield* vault.unlockNew(12)
    const store = yield* CredentialStore.CredentialStore
    yield* store.put("worker-token", yield* vault.encrypt(Redacted.make("not-a-valid-token"), Vault.CURRENT_KEY_VERSION))
    const registry = yield* OperationRegistry.make([])
    const graph = yield* Composite.make(registry.source)
    const config = yield* SubscriptionRef.make<ReadonlyArray<OutboundPeer>>([
      entry({ peer_id: "w", address: quic, fingerprint: worker.fingerprint, namespace_prefix: "gpu" })
    ])
    const links = yield* Outbound.make(graph, {
      identity: Tls.SelfSigned,
      changes: config.changes,
      extra: [entry({ peer_id: "gone", address: "quic://127.0.0.1:9", token_credential: "missing" })]
    })

    // Internal import under the prefix: in the graph, not on the wire; ops/secret is not listed to us (no scope).
    const connected = yield* eventually(Effect.suspend(() => {
      const w = links.peers().find((p) => p.peer_id === "w")
      return w?.state === "connected" ? Effect.succeed(w) : Effect.fail("not yet")
    }))
    expect(connected).toMatchObject({ address: quic, attempts: 0, last_error: null, export_as: "internal" })
    const names = graph.peers().find((p) => p.id === "w")!.operations.map((o) => o.name)
    expect(names).toContain("gpu/demo/echo")
    expect(names).not.toContain("gpu/ops/secret")
    expect(graph.source.lookup("gpu/demo/echo")).toBeUndefined()
    expect(graph.source.lookup("w/gpu/demo/echo")).toBeUndefined()

    // A credential that does not exist fails that peer only, naming the credential.
    expect(links.peers().find((p) => p.peer_id === "gone")).toMatchObject({
      state: "failed",
      last_error: "credential missing not found"
    })

    // Changed to exported with a filter: the link is reopened; the wire sees plain and pinned names.
    yield* SubscriptionRef.set(config, [
      entry({ peer_id: "w", address: quic, fingerprint: worker.fingerprint, export_as: "external", operation_filter: ["demo/*"] })
    ])
    yield* eventually(Effect.suspend(() =>
      graph.source.lookup("w/demo/echo") !== undefined ? Effect.void : Effect.fail("not yet")
    ))
    expect(graph.source.lookup("demo/echo")?.spec.visibility).toBe("external")
    expect(yield* graph.call("w/demo/echo", { hi: 1 })).toEqual({ hi: 1 })
    expect(yield* graph.call("demo/echo", { hi: 2 })).toEqual({ hi: 2 })
    expect(graph.peers().find((p) => p.id === "w")!.operations.map((o) => o.name)).toEqual(["demo/echo"])

    // A bad token: the worker refuses it (UNAUTHORIZED), the link keeps retrying and says why.
    yield* SubscriptionRef.set(config, [
      entry({ peer_id: "w", address: quic, fingerprint: worker.fingerprint, token_credential: "worker-token" })
    ])
    const refused = yield* eventually(Effect.suspend(() => {
      const w = links.peers().find((p) => p.peer_id === "w")
      return w !== undefined && w.attempts > 0 ? Effect.succeed(w) : Effect.fail("not yet")
    }))
    expect(refused.state).toBe("reconnecting")
    expect(refused.last_error).toEqual(expect.any(String))
    expect(refused.last_error).not.toContain("not-a-valid-token")

    // Removed: the link closes and its names are gone (NOT_FOUND, not "not connected").
    yield* SubscriptionRef.set(config, [])
    yield* eventually(Effect.suspend(() =>
      links.peers().some((p) => p.peer_id === "w") ? Effect.fail("not yet") : Effect.void
    ))
    const gone = yield* Effect.flip(graph.call("w/demo/echo", {}))
    expect(gone.code).toBe("NOT_FOUND")
    expect(graph.peers().map((p) => p.id)).not.toContain("w")
  }).pipe(
    Effect.scoped,
    Effect.provide(Layer.mergeAll(Vault.layer, CredentialStore.layerMemory, Dialers.layer))
  ), { timeout: 30_000 })
