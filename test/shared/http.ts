/**
 * A `node:http` server listening on 127.0.0.1, port 0, for the scope's life (its connections are cut at the end), and
 * JSON POSTs with an optional bearer token: over http (fetch), and over https to a node's self-signed certificate.
 */
import { Effect, Redacted } from "effect"
import type * as Http from "node:http"
import * as Https from "node:https"
import type { AddressInfo } from "node:net"
import type * as NodeTls from "node:tls"
import type { Scope } from "effect"
import * as Tls from "../../src/services/Tls.js"

/** Listen on 127.0.0.1:0 until the scope closes; the base URL, `http://127.0.0.1:PORT`. */
export const listen = (server: Http.Server): Effect.Effect<string, never, Scope.Scope> =>
  Effect.map(
    Effect.acquireRelease(
      Effect.async<void>((resume) => {
        server.listen(0, "127.0.0.1", () => resume(Effect.void))
      }),
      () =>
        Effect.async<void>((resume) => {
          server.closeAllConnections()
          server.close(() => resume(Effect.void))
        })
    ),
    () => `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  )

/** POST `body` as JSON (with `Authorization: Bearer token` when given): the status and the JSON answer. */
export const post = (url: string, body: unknown, token?: string) =>
  Effect.promise(async () => {
    const response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
      body: JSON.stringify(body)
    })
    return { status: response.status, body: await response.json() as any }
  })

/**
 * An https POST that does not CA-check the server's certificate (a node's is self-signed), optionally with a client
 * certificate or a bearer token: the status, headers, JSON answer, and the fingerprint of the certificate the server
 * presented.
 */
export const httpsPost = (
  url: string,
  body: unknown,
  options: { readonly client?: Tls.TlsCredentials | undefined; readonly token?: string | undefined } = {}
) =>
  Effect.async<{ status: number; headers: Http.IncomingHttpHeaders; body: any; fingerprint: string }>((resume) => {
    const { client, token } = options
    const req = Https.request(url, {
      method: "POST",
      rejectUnauthorized: false,
      headers: { "content-type": "application/json", ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
      ...(client === undefined ? {} : { cert: client.certificatePem, key: Redacted.value(client.privateKeyPem) })
    }, (res) => {
      const raw = (res.socket as NodeTls.TLSSocket).getPeerCertificate().raw
      let text = ""
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => (text += chunk))
      res.on("end", () =>
        resume(Effect.succeed({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: JSON.parse(text),
          fingerprint: raw === undefined ? "" : Tls.fingerprint(raw).pipe((o) => (o._tag === "Some" ? o.value : ""))
        })))
    })
    req.on("error", (error) => resume(Effect.die(error)))
    req.end(JSON.stringify(body))
  })
