/**
 * Deadlines of many calls served by one fiber (per connection), instead of a timer fiber per call.
 *
 * Entries live in a doubly linked list ordered by deadline. Calls with the default timeout arrive in deadline order, so
 * an insertion is O(1) from the tail; a finished call unlinks its entry in O(1), so the list only holds calls in
 * flight. One fiber sleeps (Effect `Clock`, so `TestClock` drives it in tests) until the earliest deadline, fires what
 * has expired, and is woken when an insertion becomes the new earliest.
 */
import { Clock, Deferred, Effect, FiberId } from "effect"
import type { Scope } from "effect"

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
  let head: Entry | undefined
  let tail: Entry | undefined
  let size = 0
  let wake = yield* Deferred.make<void>()

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
    if (after === undefined) {
      head = entry
      Deferred.unsafeDone(wake, Effect.void) // a new earliest deadline: re-arm the timer
    } else {
      after.next = entry
    }
    return () => unlink(entry)
  }

  const loop: Effect.Effect<never> = Effect.suspend(() => {
    const first = head
    if (first === undefined) return Effect.zipRight(awaitWake(), loop)
    return Effect.flatMap(Clock.currentTimeMillis, (now) => {
      if (first.deadline <= now) {
        unlink(first)
        first.onExpire()
        return loop
      }
      return Effect.zipRight(Effect.race(Effect.sleep(first.deadline - now), awaitWake()), loop)
    })
  })

  const awaitWake = () =>
    Effect.suspend(() => {
      const current = wake
      return Effect.zipRight(
        Deferred.await(current),
        Effect.sync(() => {
          if (wake === current) wake = Deferred.unsafeMake(FiberId.none)
        })
      )
    })

  yield* Effect.forkScoped(loop)
  return { add, size: () => size }
})
