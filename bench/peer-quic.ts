/**
 * A scenario module for the loopback peer harness (`npm run bench:compare` passes it with `--module`): `raw-quic-
 * alknet`, the raw QUIC floor on **this project's QUIC layer** (`src/layers/quic`: our driver over quiche), to set
 * beside the harness's `alknet-quic`. The harness's own `raw-quic` runs on @matrixai/quic's JavaScript layer, which
 * alknet no longer uses, so it is not the floor alknet-quic should be held to.
 *
 * The floor does what the harness's `raw-quic` does, with no call engine: one bidirectional stream per request, the
 * same envelopes (4-byte big-endian length + JSON), the server answers as soon as it has parsed the request and ends
 * its side, ticker items coalesced into writes of up to 64 KiB that wait for the stream's flow control; the client
 * writes the request, ends its side and reads the answers until the server's FIN. Client and server use the
 * transport's defaults (`defaultTuning`), the client pins the server's fingerprint, and every call is one
 * `Effect.runPromise`, as the harness's alknet scenario does.
 *
 * The harness types its modules structurally (`scenarios: ReadonlyArray<Scenario>`); the few fields used here are
 * declared below rather than imported, so this file stands alone.
 */
import { Effect, Exit, Option, Scope } from "effect"
import { randomUUID } from "node:crypto"
import * as Codec from "../src/call/Codec.js"
import * as Quic from "../src/layers/quic/Quic.js"
import type { EventEnvelope } from "../src/schema/Envelope.js"
import type { BidiStream, Connection } from "../src/services/Endpoint.js"
import * as Tls from "../src/services/Tls.js"

interface EchoInput {
  readonly n: number
  readonly s: string
}
interface Context {
  readonly host: string
  readonly tls: { readonly certPath: string; readonly keyPath: string }
}

const ALPN = "bench/raw"
const COALESCE_BYTES = 64 * 1024

/** Read frames until `onEnvelope` says stop (returns false) or the peer's FIN. */
const readFrames = (stream: BidiStream, onEnvelope: (e: EventEnvelope) => boolean): Effect.Effect<void, unknown> =>
  Effect.suspend(() => {
    const decoder = new Codec.FrameDecoder()
    const loop: Effect.Effect<void, unknown> = Effect.flatMap(stream.read, (chunk) => {
      if (Option.isNone(chunk)) return Effect.void
      for (const envelope of decoder.push(chunk.value)) if (!onEnvelope(envelope)) return Effect.void
      return loop
    })
    return loop
  })

/** The answer frames for one request, as the writes a careful raw server makes (≤ 64 KiB each). */
const answerWrites = (request: EventEnvelope): Array<Uint8Array> => {
  const { operationId, input } = request.payload as { operationId: string; input: { count?: number } }
  if (operationId !== "/bench/ticker") {
    return [Codec.encodeFrame({ type: "call.responded", id: request.id, payload: { output: input } })]
  }
  const writes: Array<Uint8Array> = []
  let batch: Array<Uint8Array> = []
  let bytes = 0
  for (let i = 0; i < (input.count ?? 0); i++) {
    const frame = Codec.encodeFrame({ type: "call.responded", id: request.id, payload: { output: { i } } })
    batch.push(frame)
    bytes += frame.length
    if (bytes >= COALESCE_BYTES) {
      writes.push(Buffer.concat(batch, bytes))
      batch = []
      bytes = 0
    }
  }
  batch.push(Codec.encodeFrame({ type: "call.completed", id: request.id, payload: {} }))
  writes.push(Buffer.concat(batch))
  return writes
}

const serveStream = (stream: BidiStream) =>
  Effect.gen(function*() {
    let request: EventEnvelope | undefined
    yield* readFrames(stream, (e) => ((request = e), false))
    if (request !== undefined) for (const bytes of answerWrites(request)) yield* stream.write(bytes)
    yield* stream.end
  }).pipe(Effect.catchAll(() => stream.reset))

const serveConnection = (connection: Connection) =>
  Effect.ignore(Effect.forever(Effect.flatMap(connection.acceptBidi, (stream) => Effect.forkScoped(serveStream(stream)))))

const identityOf = (ctx: Context) => Tls.X509(ctx.tls.certPath, ctx.tls.keyPath)

export const scenarios = [
  {
    name: "raw-quic-alknet",
    transport: "QUIC (alknet's driver)",
    description:
      "Floor on alknet's own QUIC layer (src/layers/quic: its driver over quiche), no call engine: one bidi stream per request, 4-byte BE length + the same envelopes, defaultTuning, client pins the server's fingerprint; stream items coalesced into <=64 KiB writes; Effect.runPromise per call.",
    async startServer(ctx: Context) {
      const scope = Effect.runSync(Scope.make())
      const endpoint = await Effect.runPromise(
        Scope.extend(Quic.makeEndpoint({ host: ctx.host, identity: identityOf(ctx), handlers: { [ALPN]: serveConnection } }), scope)
      )
      return { port: endpoint.address.port, stop: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
    },
    async makeClient(port: number, ctx: Context) {
      const credentials = await Effect.runPromise(Tls.load(identityOf(ctx)))
      const scope = Effect.runSync(Scope.make())
      const connection = await Effect.runPromise(
        Scope.extend(Quic.connect({ host: ctx.host, port }, { alpn: ALPN, expectedFingerprint: credentials.fingerprint }), scope)
      )
      /** One request on a new stream: write it and our FIN, read the answers until the server's FIN. */
      const exchange = (request: EventEnvelope, onEnvelope: (e: EventEnvelope) => void) =>
        Effect.acquireUseRelease(
          connection.openBidi,
          (stream) =>
            Effect.zipRight(
              Effect.zipRight(stream.write(Codec.encodeFrame(request)), stream.end),
              readFrames(stream, (e) => (onEnvelope(e), true))
            ),
          (stream) => stream.reset
        )
      return {
        call: (input: EchoInput) => {
          let output: EchoInput | undefined
          const request = { type: "call.requested", id: randomUUID(), payload: { operationId: "/bench/echo", input } }
          return Effect.runPromise(
            Effect.flatMap(
              exchange(request, (e) => (output = (e.payload as { output: EchoInput }).output)),
              () => (output === undefined ? Effect.fail(new Error("no answer")) : Effect.succeed(output))
            )
          )
        },
        stream: (count: number) => {
          let n = 0
          let completed = false
          const request = { type: "call.requested", id: randomUUID(), payload: { operationId: "/bench/ticker", input: { count } } }
          return Effect.runPromise(
            Effect.flatMap(
              exchange(request, (e) => {
                if (e.type === "call.completed") completed = true
                else if ((e.payload as { output: { i: number } }).output.i !== n++) throw new Error("stream out of order")
              }),
              () => (completed ? Effect.succeed(n) : Effect.fail(new Error(`stream ended after ${n} items`)))
            )
          )
        },
        close: () => Effect.runPromise(Scope.close(scope, Exit.void)),
        info: () => ({ alpn: ALPN, pinned: credentials.fingerprint })
      }
    }
  }
]
