/**
 * Deadlines of many calls served by one timer fiber (per connection), instead of a timer fiber per call.
 *
 * Entries live in a doubly linked list ordered by deadline. Calls with the default timeout arrive in deadline order, so
 * an insertion is O(1) from the tail; a finished call unlinks its entry in O(1), so the list only holds calls in
 * flight. The timer fiber sleeps (Effect `Clock`, so `TestClock` drives it in tests) until the deadline it was armed
 * for, fires what has expired, and sleeps again until the next one; it ends when the list is empty. It is only re-armed
 * (interrupted and forked anew) when an entry is due before the time it sleeps until, so in steady state a call costs
 * no fiber at all: a call due after the armed time is found when the timer wakes.
 */
import { Clock, Effect, Runtime } from "effect"
import type { Fiber, Scope } from "effect"

export interface Deadlines {
  /** Run `onExpire` (synchronously, in the timer fiber) at `deadline` (epoch ms); the result cancels it. */
  readonly add: (deadline: number, onExpire: () => void) => () => void
  /** Entries not yet fired or cancelled. */
  readonly size: () => number
}

interface Entry {
  readonly deadline: number
  readonly onExpire: () => void
  prev: Entry | undefined
  next: Entry | undefined
  linked: boolean
}

export const make: Effect.Effect<Deadlines, never, Scope.Scope> = Effect.gen(function*() {
  const runFork = Runtime.runFork(yield* Effect.runtime<never>())
  let head: Entry | undefined
  let tail: Entry | undefined
  let size = 0
  /** The timer fiber and the deadline it sleeps until. */
  let armed: { readonly at: number; readonly fiber: Fiber.RuntimeFiber<void> } | undefined
  let closed = false

  const unlink = (entry: Entry) => {
    if (!entry.linked) return
    entry.linked = false
    size--
    if (entry.prev === undefined) head = entry.next
    else entry.prev.next = entry.next
    if (entry.next === undefined) tail = entry.prev
    else entry.next.prev = entry.prev
    entry.prev = entry.next = undefined
  }

  /** Sleep until `at`, fire what expired, go on with the next deadline; end when nothing is left. */
  const timer = (at: number): Effect.Effect<void> =>
    Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.zipRight(
        Effect.sleep(Math.max(0, at - now)),
        Effect.flatMap(Clock.currentTimeMillis, (later) => {
          while (head !== undefined && head.deadline <= later) {
            const expired = head
            unlink(expired)
            expired.onExpire()
          }
          if (head === undefined) {
            armed = undefined
            return Effect.void
          }
          const next = head.deadline
          return Effect.withFiberRuntime<void>((self) => {
            armed = { at: next, fiber: self }
            return timer(next)
          })
        })
      ))

  const arm = (at: number) => {
    if (closed) return
    armed?.fiber.unsafeInterruptAsFork(armed.fiber.id())
    armed = undefined
    const fiber = runFork(timer(at))
    // the fiber may have finished synchronously; only record it while it runs
    if (fiber.unsafePoll() === null) armed = { at, fiber }
  }

  const add = (deadline: number, onExpire: () => void) => {
    const entry: Entry = { deadline, onExpire, prev: undefined, next: undefined, linked: true }
    size++
    // walk back from the tail to the last entry due no later than this one
    let after = tail
    while (after !== undefined && after.deadline > deadline) after = after.prev
    entry.prev = after
    entry.next = after === undefined ? head : after.next
    if (entry.next === undefined) tail = entry
    else entry.next.prev = entry
    if (after === undefined) head = entry
    else after.next = entry
    if (armed === undefined || deadline < armed.at) arm(deadline)
    return () => unlink(entry)
  }

  yield* Effect.addFinalizer(() =>
    Effect.suspend(() => {
      closed = true
      const fiber = armed?.fiber
      armed = undefined
      return fiber === undefined ? Effect.void : Effect.asVoid(fiber.interruptAsFork(fiber.id()))
    })
  )
  return { add, size: () => size }
})
