/**
 * Demo operations, served by `alknet node --demo`: enough to try the CLI by hand and to test nodes end to end
 * (access control, cancellation, draining) from other processes.
 *
 * - `demo/echo` (query, open): `{ "echo": <input>, "node": <node id> }`.
 * - `demo/secret` (query, requires scope `demo`): `{ "secret": "…", "caller": <identity id> }`.
 * - `demo/slow` (query, open): input `{ "ms"?: number }`; answers `{ "slept_ms" }` after `ms`, or runs until
 *   interrupted (abort, deadline, dropped connection) when `ms` is absent.
 * - `demo/ticks` (subscription, open): input `{ "interval_ms"?: number, "count"?: number }`; `{ "n": 0 }`, `{ "n": 1 }`, …
 *   every `interval_ms` (default 100), `count` items or forever.
 *
 * `demo/slow` and `demo/ticks` report through `record` when they start, finish, and are interrupted: the node writes
 * these lines to stderr (`demo: demo/slow interrupted after 120 ms`), so a test can see an abort arrive.
 */
import { Clock, Effect, Option, Schedule, Schema, Stream } from "effect"
import * as Operation from "../services/Operation.js"
import type { HandlerRegistration } from "../services/Operation.js"
import { plural } from "./io.js"

const NodeId = Schema.Struct({ id: Schema.String })

const echo = Operation.query({
  name: "demo/echo",
  description: "Answers its input and the id of the node that answered.",
  input: Schema.Unknown,
  output: Schema.Struct({ echo: Schema.Unknown, node: Schema.String }),
  handler: (input, ctx) =>
    Effect.map(ctx.env.invoke("node/info", {}), (info) => ({
      echo: input,
      node: Schema.is(NodeId)(info) ? info.id : "unknown"
    }))
}).with({ env: ["node/info"] })

const secret = Operation.query({
  name: "demo/secret",
  description: "Needs the scope demo: shows that an identity's scopes are checked.",
  input: Schema.Unknown,
  output: Schema.Struct({ secret: Schema.String, caller: Schema.String }),
  access: { requiredScopes: ["demo"] },
  handler: (_, ctx) =>
    Effect.succeed({
      secret: "the demo secret",
      caller: Option.getOrElse(Option.map(ctx.identity, (i) => i.id), () => "anonymous")
    })
})

const Ms = Schema.Number.pipe(Schema.nonNegative())

export const operations = (record: (line: string) => Effect.Effect<void>): ReadonlyArray<HandlerRegistration> => {
  const since = (start: number) => Effect.map(Clock.currentTimeMillis, (now) => now - start)

  const slow = Operation.query({
    name: "demo/slow",
    description: "Sleeps ms milliseconds (forever without ms), reporting an interruption on the node's stderr.",
    input: Schema.Struct({ ms: Schema.optional(Ms) }),
    output: Schema.Struct({ slept_ms: Schema.Number }),
    handler: ({ ms }, ctx) =>
      Effect.gen(function*() {
        const start = yield* Clock.currentTimeMillis
        yield* record(`demo/slow started (${ctx.requestId})`)
        yield* ms === undefined ? Effect.never : Effect.sleep(ms)
        const slept = yield* since(start)
        yield* record(`demo/slow finished after ${slept} ms (${ctx.requestId})`)
        return { slept_ms: slept }
      }).pipe(
        Effect.onInterrupt(() =>
          Effect.flatMap(Clock.currentTimeMillis, (now) => record(`demo/slow interrupted (${ctx.requestId}) at ${now}`))
        )
      )
  })

  const ticks = Operation.subscription({
    name: "demo/ticks",
    description: "Streams {n} every interval_ms (default 100), count items or forever.",
    input: Schema.Struct({ interval_ms: Schema.optional(Ms), count: Schema.optional(Schema.Int) }),
    output: Schema.Struct({ n: Schema.Int }),
    handler: ({ count, interval_ms }, ctx) => {
      let sent = 0
      let completed = false
      const items = Stream.fromSchedule(Schedule.spaced(interval_ms ?? 100)).pipe(
        Stream.map(() => ({ n: sent++ })),
        (s) => (count === undefined ? s : Stream.take(s, count))
      )
      return items.pipe(
        Stream.onStart(record(`demo/ticks started (${ctx.requestId})`)),
        Stream.onEnd(Effect.suspend(() => {
          completed = true
          return record(`demo/ticks completed after ${plural(sent, "item")} (${ctx.requestId})`)
        })),
        Stream.ensuring(Effect.suspend(() =>
          completed ? Effect.void : record(`demo/ticks interrupted after ${plural(sent, "item")} (${ctx.requestId})`)
        ))
      )
    }
  })

  return [echo, secret, slow, ticks]
}
