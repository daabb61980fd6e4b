/**
 * Deadlines of many calls served by one timer fiber (per connection), instead of a timer fiber per call.
 *
 * Entries live in a binary min-heap ordered by deadline (ties in the order they were added), each entry knowing its
 * index in the heap: adding is O(log n) whatever order callers choose their deadlines in (a caller sending descending
 * `timeout_ms` cannot make it quadratic), and cancelling removes the entry at once in O(log n), so the heap only holds
 * calls in flight — a cancelled entry leaves nothing behind.
 *
 * The timer fiber sleeps (Effect `Clock`, so `TestClock` drives it in tests) until the earliest deadline, fires what
 * has expired, and sleeps again until the next one; it ends when the heap is empty. It is only re-armed (interrupted
 * and forked anew) when an entry is due before the time it sleeps until, so in steady state a call costs no fiber at
 * all. A freshly forked timer yields once before it reads the earliest deadline, so a burst of entries added in one
 * go (a read of many requests, however ordered) arms it once.
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
  /** Insertion order, to fire equal deadlines in the order they were added. */
  readonly seq: number
  readonly onExpire: () => void
  /** Position in the heap; -1 once fired or cancelled. */
  index: number
}

/** The timer fiber, and the deadline it sleeps until (`undefined` until it has read the heap). */
interface Timer {
  fiber: Fiber.RuntimeFiber<void> | undefined
  at: number | undefined
}

const before = (a: Entry, b: Entry): boolean => a.deadline < b.deadline || (a.deadline === b.deadline && a.seq < b.seq)

export const make: Effect.Effect<Deadlines, never, Scope.Scope> = Effect.gen(function*() {
  const runFork = Runtime.runFork(yield* Effect.runtime<never>())
  const heap: Array<Entry> = []
  let seq = 0
  let timer: Timer | undefined
  /** The timer is running expired entries: an entry added meanwhile is found by it, no re-arm. */
  let firing = false
  let closed = false

  const place = (entry: Entry, index: number) => {
    heap[index] = entry
    entry.index = index
  }

  const siftUp = (entry: Entry, index: number) => {
    while (index > 0) {
      const parent = (index - 1) >> 1
      const above = heap[parent]!
      if (!before(entry, above)) break
      place(above, index)
      index = parent
    }
    place(entry, index)
  }

  const siftDown = (entry: Entry, index: number) => {
    const length = heap.length
    for (;;) {
      const left = 2 * index + 1
      if (left >= length) break
      const right = left + 1
      const child = right < length && before(heap[right]!, heap[left]!) ? right : left
      const below = heap[child]!
      if (!before(below, entry)) break
      place(below, index)
      index = child
    }
    place(entry, index)
  }

  const remove = (entry: Entry) => {
    const index = entry.index
    if (index < 0) return
    entry.index = -1
    const last = heap.pop()!
    if (last === entry) return
    // move the last entry into the hole, then up or down to where it belongs
    if (index > 0 && before(last, heap[(index - 1) >> 1]!)) siftUp(last, index)
    else siftDown(last, index)
  }

  /** Sleep until the earliest deadline, fire what expired, go on; end when nothing is left. */
  const run = (self: Timer): Effect.Effect<void> =>
    Effect.suspend(() => {
      const first = heap[0]
      if (first === undefined) return Effect.void
      const at = first.deadline
      self.at = at
      return Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.zipRight(
          Effect.sleep(Math.max(0, at - now)),
          Effect.flatMap(Clock.currentTimeMillis, (later) => {
            firing = true
            try {
              while (heap.length > 0 && heap[0]!.deadline <= later) {
                const expired = heap[0]!
                remove(expired)
                expired.onExpire()
              }
            } finally {
              firing = false
            }
            return run(self)
          })
        ))
    })

  const arm = () => {
    const previous = timer?.fiber
    previous?.unsafeInterruptAsFork(previous.id())
    const self: Timer = { fiber: undefined, at: undefined }
    timer = self
    // It yields before reading the heap, so entries added in the same go are all seen. However it ends (a throwing
    // `onExpire` included), the next `add` finds no timer and starts one.
    self.fiber = runFork(
      Effect.zipRight(Effect.yieldNow(), run(self)).pipe(
        Effect.ensuring(Effect.sync(() => {
          if (timer === self) timer = undefined
        }))
      )
    )
  }

  const add = (deadline: number, onExpire: () => void) => {
    const entry: Entry = { deadline, seq: seq++, onExpire, index: heap.length }
    heap.push(entry)
    siftUp(entry, entry.index)
    // No timer: start one. A timer that has not read the heap yet will see this entry; one sleeping until later than
    // this deadline must be replaced; one firing finds it when it is done.
    if (!closed && !firing && (timer === undefined || (timer.at !== undefined && deadline < timer.at))) arm()
    return () => remove(entry)
  }

  yield* Effect.addFinalizer(() =>
    Effect.suspend(() => {
      closed = true
      const fiber = timer?.fiber
      timer = undefined
      return fiber === undefined ? Effect.void : Effect.asVoid(fiber.interruptAsFork(fiber.id()))
    })
  )
  return { add, size: () => heap.length }
})
