/**
 * `alknet node`: run a node from its home until SIGINT / SIGTERM, then drain.
 *
 * The first stdout line is stable for scripts: `alknet node <fingerprint> listening quic://HOST:PORT`, then one
 * such line per other transport (`wss://…`, or `ws://…` with `--ws-plain`). Everything else goes to stderr.
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Effect, Option } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import * as ConfigFile from "../layers/ConfigFile.js"
import * as NodeHome from "../layers/NodeHome.js"
import * as Demo from "./demo.js"
import { signalEndsNormally } from "./errors.js"
import * as Home from "./home.js"
import { initHome } from "./init.js"
import * as Io from "./io.js"
import * as Outbound from "./outbound.js"
import * as Shared from "./options.js"
import { writeRunFile } from "./status.js"

const listen = Options.text("listen").pipe(
  Options.withPseudoName("HOST:PORT"),
  Options.withDescription("listen for QUIC on HOST:PORT instead of the config's listen (port 0: any free port)"),
  Options.optional
)
const wsListen = Options.text("ws-listen").pipe(
  Options.withPseudoName("HOST:PORT"),
  Options.withDescription("also serve the call protocol over WebSocket on HOST:PORT (wss:// with the node's key)"),
  Options.optional
)
const wsPlain = Options.boolean("ws-plain").pipe(
  Options.withDescription("serve plain ws:// instead of wss:// (behind a TLS-terminating proxy)")
)
const demo = Options.boolean("demo").pipe(
  Options.withDescription("also serve the demo operations (demo/echo, demo/secret, demo/slow, demo/ticks)")
)
const init = Options.boolean("init").pipe(
  Options.withDescription("create the home first if there is none (its report goes to stderr)")
)

/** Re-read the config file on SIGHUP, for as long as the scope lives. */
const reloadOnSighup = Effect.gen(function*() {
  const file = yield* ConfigFile.ConfigFile
  const hangup = Effect.async<void>((resume) => {
    const on = () => resume(Effect.void)
    process.once("SIGHUP", on)
    return Effect.sync(() => void process.removeListener("SIGHUP", on))
  })
  yield* hangup.pipe(
    Effect.zipRight(file.reload.pipe(
      Effect.zipRight(Io.err(`alknet node: ${file.path} reloaded`)),
      Effect.catchAll((e) => Io.err(`alknet node: reload refused, previous config kept: ${e.message}`))
    )),
    Effect.forever,
    Effect.forkScoped
  )
})

export const command = Command.make(
  "node",
  { home: Shared.home, listen, wsListen, wsPlain, demo, init, connect: Outbound.connectOption },
  (o) =>
    Effect.gen(function*() {
      const home = path.resolve(o.home)
      const listenAt = Option.isSome(o.listen) ? yield* Shared.parseListen("--listen", o.listen.value) : undefined
      const wsAt = Option.isSome(o.wsListen) ? yield* Shared.parseListen("--ws-listen", o.wsListen.value) : undefined
      const connect = yield* Effect.forEach(o.connect, (target) => Outbound.parseTarget("--connect", target))
      if (o.init) {
        const found = yield* Effect.promise(() => fs.access(NodeHome.configPath(home)).then(() => true, () => false))
        if (!found) yield* initHome({ home, words: 24, mnemonicStdin: false, storeMnemonic: true }, Io.err)
      }
      yield* NodeHome.requireHome(home)
      const mnemonic = yield* Home.mnemonicFromStdin(home)
      // The node (QUIC and all) loads only for this command.
      const Node = yield* Effect.promise(() => import("../layers/Node.js"))
      const layer = Node.layer({
        home,
        ...(listenAt === undefined ? {} : { listen: listenAt }),
        ...(wsAt === undefined ? {} : { webSocket: { ...wsAt, tls: !o.wsPlain } }),
        ...(connect.length === 0 ? {} : { connect }),
        ...(o.demo ? { operations: Demo.operations((line) => Io.err(`demo: ${line}`)) } : {}),
        ...(Option.isSome(mnemonic) ? { mnemonic: mnemonic.value } : {})
      })
      let started = false
      yield* Effect.gen(function*() {
        const node = yield* Node.Node
        started = true
        for (const transport of node.transports) {
          yield* Io.out(`alknet node ${node.fingerprint} listening ${transport.address}`)
        }
        yield* writeRunFile(home, { pid: process.pid, fingerprint: node.fingerprint, transports: node.transports })
        yield* Effect.sync(signalEndsNormally)
        yield* reloadOnSighup
        yield* Io.err(`alknet node: serving from ${home}; stop with Ctrl-C or SIGTERM (open calls are drained)`)
        yield* Effect.addFinalizer(() => Io.err("alknet node: stopping: no new connections, draining open calls"))
        return yield* Effect.never
      }).pipe(
        Effect.scoped,
        Effect.provide(layer),
        Effect.ensuring(Effect.suspend(() => (started ? Io.err("alknet node: stopped") : Effect.void)))
      )
    })
).pipe(Command.withDescription("Run the node of a home until SIGINT / SIGTERM (graceful drain)."))
