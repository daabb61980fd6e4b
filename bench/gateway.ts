/**
 * `npm run bench:gateway` — the HTTP gateway beside a bare `node:http` JSON echo, in one process on loopback.
 *
 * `POST /call` of an echo operation at concurrency 64 over keep-alive connections (one `http.Agent`, the same client
 * for both servers): calls/s and CPU µs per call (client and server together, one process), and the gateway's share
 * of the bare server. Then SSE: items/s of one subscription streaming small items. `--quick` runs 1/5.
 */
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { Effect, Schema, Stream } from "effect"
import * as Discovery from "../src/call/Discovery.js"
import * as Gateway from "../src/layers/http/Gateway.js"
import * as Operation from "../src/services/Operation.js"
import * as OperationRegistry from "../src/services/OperationRegistry.js"

const quick = process.argv.includes("--quick")
const scale = (n: number) => (quick ? Math.max(1, Math.floor(n / 5)) : n)
const CONCURRENCY = 64
const CALLS = scale(20_000)
const ITEMS = scale(200_000)
const BODY = JSON.stringify({ operation: "bench/echo", input: { n: 1, s: "x".repeat(100) } })

const operations = [
  Operation.query({
    name: "bench/echo",
    input: Schema.Unknown,
    output: Schema.Unknown,
    handler: (input) => Effect.succeed(input)
  }),
  Operation.subscription({
    name: "bench/ticker",
    input: Schema.Struct({ count: Schema.Number }),
    output: Schema.Struct({ i: Schema.Number }),
    handler: ({ count }) => Stream.range(0, count - 1).pipe(Stream.map((i) => ({ i })))
  })
]

/** The floor: parse the JSON body, answer the same shape the gateway does. */
const bare = Http.createServer((req, res) => {
  const chunks: Array<Buffer> = []
  req.on("data", (c: Buffer) => chunks.push(c))
  req.on("end", () => {
    const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { input: unknown }
    const text = JSON.stringify({ request_id: crypto.randomUUID(), result: "ok", output: body.input })
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(text) })
    res.end(text)
  })
})

const listen = (server: Http.Server) =>
  new Promise<string>((resolve) => server.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)))

const agent = new Http.Agent({ keepAlive: true, maxSockets: CONCURRENCY })

const post = (url: string, body: string) =>
  new Promise<string>((resolve, reject) => {
    const req = Http.request(url, { method: "POST", agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (res) => {
      let text = ""
      res.setEncoding("utf8")
      res.on("data", (c: string) => (text += c))
      res.on("end", () => (res.statusCode === 200 ? resolve(text) : reject(new Error(`HTTP ${res.statusCode}: ${text}`))))
    })
    req.on("error", reject)
    req.end(body)
  })

/** `calls` POSTs with `CONCURRENCY` in flight: calls/s and CPU µs per call. */
const load = async (url: string, calls: number) => {
  let next = 0
  const worker = async () => {
    while (next < calls) {
      next++
      await post(`${url}/call`, BODY)
    }
  }
  // Warm up (JIT, connections), then measure.
  await Promise.all(Array.from({ length: CONCURRENCY }, () => post(`${url}/call`, BODY)))
  const cpu = process.cpuUsage()
  const start = performance.now()
  await Promise.all(Array.from({ length: CONCURRENCY }, worker))
  const seconds = (performance.now() - start) / 1000
  const used = process.cpuUsage(cpu)
  return { perSecond: calls / seconds, cpuMicros: (used.user + used.system) / calls }
}

/** One subscription of `items` items read to the end: items/s. */
const sse = (url: string, items: number) =>
  new Promise<number>((resolve, reject) => {
    const start = performance.now()
    let seen = 0
    let tail = ""
    const req = Http.request(`${url}/subscribe/bench/ticker`, { method: "POST", agent, headers: { "content-type": "application/json" } }, (res) => {
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => {
        const text = tail + chunk
        const events = text.split("\n\n")
        tail = events.pop()!
        for (const event of events) if (event.startsWith("data: ")) seen++
      })
      res.on("end", () => (seen === items ? resolve(items / ((performance.now() - start) / 1000)) : reject(new Error(`saw ${seen} of ${items}`))))
    })
    req.on("error", reject)
    req.end(JSON.stringify({ count: items }))
  })

const main = Effect.gen(function*() {
  const gateway = yield* Gateway.make({ source: Discovery.withDiscovery(OperationRegistry.sourceOf(operations)) })
  const served = Http.createServer(gateway.handler)
  const gatewayUrl = yield* Effect.promise(() => listen(served))
  const bareUrl = yield* Effect.promise(() => listen(bare))
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      agent.destroy()
      served.close()
      bare.close()
    })
  )
  const floor = yield* Effect.promise(() => load(bareUrl, CALLS))
  const ours = yield* Effect.promise(() => load(gatewayUrl, CALLS))
  const items = yield* Effect.promise(() => sse(gatewayUrl, ITEMS))
  const row = (name: string, r: { perSecond: number; cpuMicros: number }) =>
    `| ${name.padEnd(22)} | ${Math.round(r.perSecond).toString().padStart(8)} | ${r.cpuMicros.toFixed(0).padStart(9)} |`
  console.log(`POST /call, concurrency ${CONCURRENCY}, keep-alive, ${CALLS} calls (one process: client + server)\n`)
  console.log("| server                 | calls/s  | CPU µs/call |")
  console.log("|------------------------|----------|-----------|")
  console.log(row("bare node:http echo", floor))
  console.log(row("alknet gateway", ours))
  console.log(`\ngateway / bare: ${(ours.perSecond / floor.perSecond).toFixed(2)}x calls/s`)
  console.log(`SSE: ${Math.round(items)} items/s (one subscription, ${ITEMS} items)`)
})

Effect.runPromise(Effect.scoped(main)).catch((error) => {
  console.error(error)
  process.exit(1)
})
