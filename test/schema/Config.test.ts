import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import * as Config from "../../src/schema/Config.js"

const fp = (c: string) => `ed25519:${c.repeat(64)}`
const hash = `sha256:${"0".repeat(64)}`
const problem = (text: string) => Either.getLeft(Config.decode(text)).pipe((o) => o._tag === "Some" ? o.value : "")

describe("Config schema", () => {
  it("{} is a valid config with every default", () => {
    expect(Either.getOrThrow(Config.decode("{}"))).toEqual({
      listen: { host: "127.0.0.1", port: 4433 },
      tls: { type: "raw_key" },
      drain_timeout_ms: 2000,
      data_dir: "data",
      peers: [],
      api_keys: [],
      rate_limits: {
        max_connections_per_ip: 100,
        max_auth_attempts: 5,
        max_auth_failures_per_ip: 10,
        auth_failure_window_ms: 60_000,
        auth_block_ms: 300_000,
        max_calls_per_connection: 256,
        max_calls_per_caller: 1024,
        max_call_timeout_ms: 600_000,
        anonymous_subscription_timeout_ms: 600_000
      },
      list_peers: false,
      store: { type: "sqlite" },
      metrics: { auth: "token" },
      log_format: "pretty",
      http_tls: true,
      outbound: [],
      imports: []
    })
  })

  it("metrics.auth and log_format: the allowed values, anything else named", () => {
    expect(Either.getOrThrow(Config.decode(`{"metrics": {"auth": "public"}, "log_format": "json"}`))).toMatchObject({
      metrics: { auth: "public" },
      log_format: "json"
    })
    expect(Either.getOrThrow(Config.decode(`{"metrics": {}}`)).metrics).toEqual({ auth: "token" })
    const bad = Config.decode(`{"metrics": {"auth": "none"}, "log_format": "xml"}`)
    expect(Either.isLeft(bad) && bad.left).toMatch(/metrics\.auth/)
    expect(Either.isLeft(bad) && bad.left).toMatch(/log_format/)
  })

  it("imports: defaults, and bad entries named (no secret in clear: a credential is a store name)", () => {
    const config = Either.getOrThrow(Config.decode(JSON.stringify({
      imports: [
        { type: "openapi", namespace: "pets", file: "pets.yaml", base_url: "https://api.example.com/v1", credential: "pets-key", auth: { type: "header", header: "X-API-Key" } },
        { type: "mcp", namespace: "gh", url: "https://mcp.example.com/mcp", credential: "gh", export_as: "external", access: { required_scopes: ["gh"] } }
      ]
    })))
    expect(config.imports[0]).toMatchObject({ namespace: "pets", export_as: "internal" })
    expect(config.imports[1]).toMatchObject({ export_as: "external", access: { required_scopes: ["gh"] } })
    const bad = (imports: ReadonlyArray<unknown>, outbound: ReadonlyArray<unknown> = []) =>
      problem(JSON.stringify({ imports, outbound }))
    expect(bad([{ type: "openapi", namespace: "a" }])).toBe("imports[0].url: an openapi import needs exactly one of url and file")
    expect(bad([{ type: "mcp", namespace: "a", file: "x" }])).toBe("imports[0].url: an mcp import needs the server's url")
    expect(bad([{ type: "mcp", namespace: "a", url: "http://h/mcp", auth: { type: "basic" }, credential: "c" }]))
      .toBe("imports[0].auth: an mcp server gets its credential as a bearer token")
    expect(bad([{ type: "openapi", namespace: "a", url: "ftp://h/x" }])).toContain("imports[0].url: expected an http:// or https:// URL")
    const userinfo = bad([{ type: "mcp", namespace: "a", url: "https://me:hunter2@h/mcp" }])
    expect(userinfo).toContain("imports[0].url: the URL holds credentials: keep the secret in the node's credential store")
    expect(userinfo).not.toContain("hunter2")
    expect(bad([{ type: "openapi", namespace: "a", url: "http://h/x", export_as: "external" }]))
      .toBe("imports[0].access: export_as external needs access (who may call the API with this node's credential)")
    expect(bad([{ type: "openapi", namespace: "a/b", url: "http://h/x" }])).toContain("imports[0].namespace: expected a peer id")
    expect(bad([{ type: "openapi", namespace: "a", url: "http://h/x" }, { type: "mcp", namespace: "a", url: "http://h/mcp" }]))
      .toBe("imports[1].namespace: duplicate namespace \"a\"")
    expect(bad([{ type: "openapi", namespace: "w1", url: "http://h/x" }], [{ peer_id: "w1", address: "quic://127.0.0.1:4501", fingerprint: fp("a") }]))
      .toBe("imports[0].namespace: namespace \"w1\" is an outbound peer's id")
    expect(bad([{ type: "openapi", namespace: "a", url: "http://h/x", secret: "hunter2" }])).toContain("imports[0].secret")
  })

  it("outbound peers: the import rule's defaults, ids from peer_id or fingerprint, and bad entries named", () => {
    const config = Either.getOrThrow(Config.decode(JSON.stringify({
      outbound: [
        { peer_id: "w1", address: "quic://127.0.0.1:4501", fingerprint: fp("a"), token_credential: "w1-token" },
        { address: "wss://[::1]:4502", fingerprint: fp("b"), export_as: "external", operation_filter: ["demo/*"] }
      ]
    })))
    expect(config.outbound[0]).toEqual({
      peer_id: "w1",
      address: "quic://127.0.0.1:4501",
      fingerprint: fp("a"),
      token_credential: "w1-token",
      export_as: "internal"
    })
    expect(config.outbound.map(Config.outboundId)).toEqual(["w1", fp("b")])
    expect(Config.decode(JSON.stringify({ outbound: [{ address: "http://x:1" }] }))).toEqual(
      Either.left(expect.stringContaining("outbound[0].address: expected quic://HOST:PORT"))
    )
    expect(Config.decode(JSON.stringify({
      outbound: [{ peer_id: "w", address: "quic://a:1" }, { peer_id: "w", address: "quic://b:1" }]
    }))).toEqual(Either.left(expect.stringContaining("outbound[1].peer_id: duplicate peer_id \"w\"")))
    expect(Config.decode(JSON.stringify({ outbound: [{ address: "quic://a:1", token: "secret" }] }))).toEqual(
      Either.left(expect.stringContaining("outbound[0].token"))
    )
  })

  it("decodes a full file; peers get defaults; expires_at is an instant", () => {
    const config = Either.getOrThrow(Config.decode(JSON.stringify({
      listen: "[::1]:9000",
      tls: { type: "x509", cert_file: "c.pem", key_file: "k.pem" },
      drain_timeout_ms: 500,
      data_dir: "/var/lib/alknet",
      rate_limits: { max_auth_attempts: 3 },
      peers: [{ peer_id: "w-1", fingerprints: [fp("a"), `SHA256:${"b".repeat(64)}`], auth_token_hash: hash }],
      api_keys: [{ prefix: "alk_AB-_", hash, scopes: ["read"], expires_at: "2030-01-01T00:00:00Z" }]
    })))
    expect(config.listen).toEqual({ host: "::1", port: 9000 })
    expect(config.rate_limits).toEqual({ ...Config.defaultRateLimits, max_auth_attempts: 3 })
    expect(config.peers[0]).toEqual({
      peer_id: "w-1",
      fingerprints: [fp("a"), `SHA256:${"b".repeat(64)}`],
      auth_token_hash: hash,
      scopes: [],
      resources: {},
      enabled: true
    })
    expect(config.api_keys[0]?.expires_at?.epochMillis).toBe(Date.UTC(2030, 0, 1))
    expect(config.api_keys[0]?.description).toBe("")
  })

  it("every error names its field", () => {
    expect(problem("{")).toMatch(/^config: /)
    expect(problem(`{"peers":[{"peer_id":"a"},{"peer_id":"b"},{"peer_id":"a"}]}`)).toBe(
      "peers[2].peer_id: duplicate peer_id \"a\""
    )
    expect(problem(`{"api_keys":[{"prefix":"alk_aaaa","hash":"${hash}"},{"prefix":"alk_aaaa","hash":"${hash}"}]}`))
      .toBe("api_keys[1].prefix: duplicate prefix \"alk_aaaa\"")
    expect(problem(`{"peers":[{"peer_id":"a","fingerprints":["ed25519:ABC"]}]}`)).toContain("peers[0].fingerprints[0]")
    expect(problem(`{"peers":[{"peer_id":"a","auth_token_hash":"sha256:xyz"}]}`)).toContain(
      "peers[0].auth_token_hash"
    )
    expect(problem(`{"peers":[{"peer_id":"has/slash"}]}`)).toContain("peers[0].peer_id")
    expect(problem(`{"peers":[{"peer_id":"local"}]}`)).toContain("reserved")
    expect(problem(`{"api_keys":[{"prefix":"key_aaaa","hash":"${hash}"}]}`)).toContain("api_keys[0].prefix")
    expect(problem(`{"api_keys":[{"prefix":"alk_aaaa","hash":"${hash}","expires_at":"soon"}]}`)).toContain(
      "api_keys[0].expires_at"
    )
    expect(problem(`{"listen":"localhost"}`)).toContain("listen: expected host:port")
    expect(problem(`{"listen":"1.2.3.4:70000"}`)).toContain("listen")
    expect(problem(`{"tls":{"type":"x509","cert_file":"c"}}`)).toBe("tls.key_file: is missing")
    expect(problem(`{"rate_limits":{"max_connections_per_ip":0}}`)).toContain("rate_limits.max_connections_per_ip")
    expect(problem(`{"drain_timeout":5}`)).toContain("drain_timeout: is unexpected")
    expect(problem(`{"peers":[{"peer_id":"a","enable":false}]}`)).toContain("peers[0].enable: is unexpected")
  })

  it("store: sqlite by default, or a PostgreSQL URL without a password", () => {
    const url = "postgres://alknet@db.internal:5432/alknet"
    const config = Either.getOrThrow(Config.decode(JSON.stringify({ store: { type: "postgres", url, password_env: "DBPW" } })))
    expect(config.store).toEqual({ type: "postgres", url, password_env: "DBPW" })
    expect(problem(JSON.stringify({ store: { type: "postgres", url: "postgres://alknet:pw@db/alknet" } }))).toContain(
      "store.url: the URL holds a password: keep it out of the config"
    )
    expect(problem(JSON.stringify({ store: { type: "postgres", url: "mysql://db/alknet" } }))).toContain(
      "store.url: expected postgres://USER@HOST:PORT/DATABASE"
    )
    expect(problem(JSON.stringify({ store: { type: "postgres" } }))).toContain("store.url")
    expect(problem(JSON.stringify({ store: { type: "redis" } }))).toContain("store.type")
  })

  it("reports every problem at once", () => {
    const message = problem(`{"listen":"x","peers":[{"peer_id":""}]}`)
    expect(message).toContain("listen")
    expect(message).toContain("peers[0].peer_id")
  })
})
