/**
 * A `node:http` server listening on 127.0.0.1, port 0, for the scope's life (its connections are cut at the end), and a
 * JSON POST with an optional bearer token.
 */
import { Effect } from "effect"
import type * as Http from "node:http"
import type { AddressInfo } from "node:net"
import type { Scope } from "effect"

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
