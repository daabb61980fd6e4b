/**
 * A node's outbound peers (SPEC §9, §11 `outbound`): one reconnecting link (`Peer.connect`) per configured entry,
 * kept in step with the live config — an entry added to the file opens a link, a removed one closes it (its
 * operations leave the graph: NOT_FOUND afterwards), a changed one is reopened. Nothing needs a restart.
 *
 * Each link presents the node's own TLS identity, pins the entry's `fingerprint`, and sends the decrypted value of
 * its `token_credential` (a credential-store provider) as the bearer token. The node serves its graph back over the
 * link; the peer's calls on it are authenticated like those of a peer that connected to us (`authenticator`: its
 * fingerprint through the identity providers, per request), so a worker may call on its head only what the head's
 * peer store grants it — open operations when it grants nothing. A credential that is missing or does not
 * decrypt leaves the peer `failed` with that error; the others are unaffected.
 */
import { Effect, Exit, Option, Redacted, Schema, Scope, Stream } from "effect"
import type { OutboundPeer } from "../schema/Config.js"
import { outboundId } from "../schema/Config.js"
import type { OperationSummary } from "../schema/OperationSpec.js"
import * as NodeMetrics from "../observability/NodeMetrics.js"
import * as CallClient from "../services/CallClient.js"
import type * as CallProtocol from "../services/CallProtocol.js"
import * as CredentialStore from "../services/CredentialStore.js"
import type { PeerId, Service as Graph } from "../services/PeerCompositeEnv.js"
import type { TlsIdentity } from "../services/Tls.js"
import * as Vault from "../services/Vault.js"
import type { FromCallOptions } from "./FromCall.js"
import * as Peer from "./Peer.js"

/** How an outbound peer is doing, as `node/info` reports it. */
export const PeerInfo = Schema.Struct({
  peer_id: Schema.String,
  address: Schema.String,
  /** `connecting` (never connected yet), `connected`, `reconnecting` (lost or refused; retrying), `failed`. */
  state: Schema.Literal("connecting", "connected", "reconnecting", "failed"),
  /** Failures since the last successful connection (its loss, then each attempt that failed). */
  attempts: Schema.Number,
  last_error: Schema.NullOr(Schema.String),
  /** Operations imported from it (what it served last while it is away). */
  operations: Schema.Number,
  export_as: Schema.Literal("internal", "external")
})
export type PeerInfo = typeof PeerInfo.Type

export interface Options {
  /** The node's TLS identity, presented to every peer. */
  readonly identity: TlsIdentity
  /**
   * Resolves who the peer is for the calls it makes to us over the link, exactly as on accepted connections: its
   * (pinned) fingerprint, re-resolved on every request, and its requests' `auth_token`s. Without one, and for a peer
   * the authenticator does not know, its calls are anonymous: open operations only.
   */
  readonly authenticator?: CallProtocol.Authenticator
  /** Failed tokens in the peer's calls to us before its link's connection is closed (read live; default 5). */
  readonly maxAuthAttempts?: Effect.Effect<number>
  /** Entries besides the config's (e.g. `alknet node --connect`), fixed for the node's life. */
  readonly extra?: ReadonlyArray<OutboundPeer>
  /** The config's entries now, then each replacement. */
  readonly changes: Stream.Stream<ReadonlyArray<OutboundPeer>>
}

export interface Service {
  readonly peers: () => ReadonlyArray<PeerInfo>
}

/** `ns/op` or a `ns/*` pattern. */
const matches = (patterns: ReadonlyArray<string>) => (operation: OperationSummary) =>
  patterns.some((p) => p === operation.name || (p.endsWith("/*") && operation.name.startsWith(p.slice(0, -1))))

/** The import rule of an entry, as `from_call` options. */
export const importOptions = (entry: OutboundPeer): FromCallOptions => ({
  visibility: entry.export_as,
  ...(entry.namespace_prefix === undefined ? {} : { namespacePrefix: entry.namespace_prefix }),
  ...(entry.operation_filter === undefined ? {} : { operationFilter: matches(entry.operation_filter) })
})

interface Running {
  readonly entry: OutboundPeer
  readonly key: string
  readonly scope: Scope.CloseableScope
  readonly link: Peer.Link | undefined
  readonly error: string | undefined
  /** The link's place in `alknet_peer_links{state}`. */
  readonly gauge: NodeMetrics.LinkState
}

/** How a link is doing, as `node/info` says it (no link: its credential failed). */
const stateOf = (link: Peer.Link | undefined): PeerInfo["state"] =>
  link === undefined || link.status() === "stopped"
    ? "failed"
    : link.status() === "connected"
    ? "connected"
    : link.connections() === 0 && link.failedAttempts() === 0
    ? "connecting"
    : "reconnecting"

/** Keep one link per entry for the life of the scope. */
export const make = (
  graph: Graph,
  options: Options
): Effect.Effect<Service, never, Scope.Scope | CredentialStore.CredentialStore | Vault.Vault | CallClient.Dialer> =>
  Effect.gen(function*() {
    const store = yield* CredentialStore.CredentialStore
    const vault = yield* Vault.Vault
    const dialer = yield* CallClient.Dialer
    const running = new Map<PeerId, Running>()
    const lock = yield* Effect.makeSemaphore(1)

    const token = (provider: string): Effect.Effect<Redacted.Redacted<string>, string> =>
      Effect.mapError(CredentialStore.decrypted(store, vault, provider), (e) => e.message)

    const start = (entry: OutboundPeer): Effect.Effect<Running> =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const gauge = NodeMetrics.makeLinkState()
        const peerId = outboundId(entry)
        const secret = entry.token_credential === undefined ? undefined : yield* Effect.either(token(entry.token_credential))
        if (secret !== undefined && secret._tag === "Left") {
          yield* Effect.logWarning(`peer ${peerId}: ${secret.left}`)
          gauge.set(stateOf(undefined))
          return { entry, key: JSON.stringify(entry), scope, link: undefined, error: secret.left, gauge }
        }
        const credentials: CallClient.Credentials = {
          identity: options.identity,
          ...(entry.fingerprint === undefined ? {} : { expectedFingerprint: entry.fingerprint }),
          ...(secret === undefined ? {} : { token: secret.right })
        }
        const link = yield* Scope.extend(
          Peer.connect(graph, {
            peerId,
            address: entry.address,
            credentials,
            import: importOptions(entry),
            ...(options.authenticator === undefined ? {} : { authenticator: options.authenticator }),
            ...(options.maxAuthAttempts === undefined ? {} : { maxAuthAttempts: options.maxAuthAttempts }),
            onStatus: (link) => gauge.set(stateOf(link))
          }).pipe(Effect.provideService(CallClient.Dialer, dialer)),
          scope
        )
        gauge.set(stateOf(link))
        return { entry, key: JSON.stringify(entry), scope, link, error: undefined, gauge }
      })

    const stop = (peerId: PeerId, r: Running) =>
      Effect.zipRight(
        Effect.ensuring(Scope.close(r.scope, Exit.void), Effect.sync(r.gauge.close)),
        graph.forget(peerId)
      )

    /** Bring the links in line with `entries` (config first, then the extras; the first entry of an id wins). */
    const apply = (entries: ReadonlyArray<OutboundPeer>) =>
      lock.withPermits(1)(Effect.gen(function*() {
        const wanted = new Map<PeerId, OutboundPeer>()
        for (const entry of entries) if (!wanted.has(outboundId(entry))) wanted.set(outboundId(entry), entry)
        for (const [peerId, r] of [...running]) {
          const next = wanted.get(peerId)
          if (next === undefined || JSON.stringify(next) !== r.key) {
            running.delete(peerId)
            yield* stop(peerId, r)
            yield* Effect.logInfo(`peer ${peerId}: link closed (${next === undefined ? "removed" : "changed"})`)
          }
        }
        for (const [peerId, entry] of wanted) {
          if (running.has(peerId)) continue
          running.set(peerId, yield* start(entry))
          yield* Effect.logInfo(`peer ${peerId}: connecting to ${entry.address}`)
        }
      }))

    yield* Effect.addFinalizer(() =>
      lock.withPermits(1)(Effect.forEach([...running], ([peerId, r]) => stop(peerId, r), { discard: true }))
    )
    const extra = options.extra ?? []
    yield* Effect.forkScoped(Stream.runForEach(options.changes, (config) => apply([...config, ...extra])))

    return {
      peers: () => {
        const statuses = new Map(graph.peers().map((s) => [s.id, s]))
        return [...running].map(([peerId, r]): PeerInfo => {
          const status = statuses.get(peerId)
          const link = r.link
          const state = stateOf(link)
          return {
            peer_id: peerId,
            address: r.entry.address,
            state,
            attempts: link?.failedAttempts() ?? 0,
            last_error: r.error ?? (link === undefined ? null : Option.getOrNull(link.lastError())),
            operations: status?.operations.length ?? 0,
            export_as: r.entry.export_as
          }
        })
      }
    }
  })
