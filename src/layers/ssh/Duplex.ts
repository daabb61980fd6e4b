/**
 * A `BidiStream` as a Node `Duplex`, for libraries that speak over a socket (`ssh2` runs its client and server over
 * any duplex). Reads are pulled on demand (backpressure reaches the transport's flow control), a write completes when
 * the transport took it, `end()` finishes our side (QUIC FIN), and destroying the duplex resets the stream.
 *
 * The duplex lives in the scope it is made in: closing the scope destroys it (and so resets the stream).
 */
import { Duplex } from "node:stream"
import { Cause, Effect, Exit, Option } from "effect"
import type { Scope } from "effect"
import type { BidiStream } from "../../services/Endpoint.js"

const toError = <E>(cause: Cause.Cause<E>): Error => {
  const failure = Cause.squash(cause)
  return failure instanceof Error ? failure : new Error(String(failure))
}

/** Wrap `stream` (not scoped: the caller destroys the duplex). `onActivity` runs on every chunk read or written. */
export const unsafeMake = (stream: BidiStream, onActivity: () => void = () => undefined): Duplex => {
  let reading = false
  const duplex: Duplex = new Duplex({
    allowHalfOpen: true,
    read() {
      if (reading) return
      reading = true
      void Effect.runPromiseExit(stream.read).then((exit) => {
        reading = false
        if (duplex.destroyed) return
        if (Exit.isFailure(exit)) {
          duplex.destroy(toError(exit.cause))
        } else if (Option.isNone(exit.value)) {
          duplex.push(null)
        } else {
          onActivity()
          duplex.push(exit.value.value)
        }
      })
    },
    write(chunk: Buffer, _encoding, callback) {
      onActivity()
      void Effect.runPromiseExit(stream.write(chunk)).then((exit) =>
        callback(Exit.isFailure(exit) ? toError(exit.cause) : null)
      )
    },
    // Chunks queued while a write is in flight go out as one: a transport write costs the same for 1 KiB as for
    // 256 KiB (QUIC: ~80 ms CPU/MiB in 32 KiB writes, ~40 in 256 KiB ones), and ssh2 writes one packet at a time.
    writev(chunks, callback) {
      onActivity()
      const bytes = chunks.length === 1 ? chunks[0]!.chunk as Buffer : Buffer.concat(chunks.map((c) => c.chunk as Buffer))
      void Effect.runPromiseExit(stream.write(bytes)).then((exit) =>
        callback(Exit.isFailure(exit) ? toError(exit.cause) : null)
      )
    },
    final(callback) {
      void Effect.runPromise(stream.end).then(() => callback())
    },
    destroy(error, callback) {
      void Effect.runPromise(stream.reset).then(() => callback(error))
    }
  })
  // A failed stream ends the duplex ('close'); its users learn of it there. Never an unhandled 'error'.
  duplex.on("error", () => undefined)
  return duplex
}

/** Wrap `stream` for the life of the scope; closing the scope destroys the duplex (resetting what is still open). */
export const make = (stream: BidiStream, onActivity?: () => void): Effect.Effect<Duplex, never, Scope.Scope> =>
  Effect.acquireRelease(Effect.sync(() => unsafeMake(stream, onActivity)), (duplex) =>
    Effect.async<void>((resume) => {
      if (duplex.closed) return resume(Effect.void)
      duplex.once("close", () => resume(Effect.void))
      duplex.destroy()
    }))
