/**
 * A QUIC endpoint in its own process, for tests that kill it (`node --import tsx peer-process.ts`). It accepts streams
 * on ALPN `test/hold`, reads them and never answers, and prints `{"port":…,"fingerprint":…}` on one line once it
 * listens. Tuning comes as JSON in argv[2].
 */
import { Effect, Option } from "effect"
import * as Quic from "../../../src/layers/quic/Quic.js"
import type { Connection } from "../../../src/services/Endpoint.js"
import * as Tls from "../../../src/services/Tls.js"

const tuning = JSON.parse(process.argv[2] ?? "{}") as Partial<Quic.Tuning>

const hold = (connection: Connection) =>
  Effect.forever(
    Effect.flatMap(connection.acceptBidi, (stream) =>
      Effect.forkScoped(Effect.forever(Effect.flatMap(stream.read, (chunk) => (Option.isNone(chunk) ? Effect.never : Effect.void)))))
  ).pipe(Effect.ignore)

Effect.runFork(
  Effect.scoped(
    Effect.gen(function*() {
      const endpoint = yield* Quic.makeEndpoint({ identity: Tls.SelfSigned, handlers: { "test/hold": hold }, tuning })
      process.stdout.write(`${JSON.stringify({ port: endpoint.address.port, fingerprint: endpoint.fingerprint })}\n`)
      yield* Effect.never
    })
  )
)
