import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Runtime, TestClock } from "effect"
import fc from "fast-check"
import * as Deadlines from "../../src/call/Deadlines.js"

const settle = Effect.repeatN(Effect.yieldNow(), 20)

describe("Deadlines", () => {
  it.scoped("fires entries in deadline order (also when added out of order) and only once", () =>
    Effect.gen(function*() {
      const deadlines = yield* Deadlines.make
      const fired: Array<string> = []
      deadlines.add(30_000, () => fired.push("a@30"))
      deadlines.add(10_000, () => fired.push("b@10")) // a new earliest: the timer is re-armed
      deadlines.add(30_000, () => fired.push("c@30"))
      deadlines.add(20_000, () => fired.push("d@20"))
      yield* settle
      expect(deadlines.size()).toBe(4)
      yield* TestClock.adjust(9_999)
      yield* settle
      expect(fired).toEqual([])
      yield* TestClock.adjust(1)
      yield* settle
      expect(fired).toEqual(["b@10"])
      yield* TestClock.adjust(20_000)
      yield* settle
      expect(fired).toEqual(["b@10", "d@20", "a@30", "c@30"])
      expect(deadlines.size()).toBe(0)
    }))

  it.scoped("a cancelled entry never fires and leaves the list", () =>
    Effect.gen(function*() {
      const deadlines = yield* Deadlines.make
      const fired: Array<string> = []
      const cancelFirst = deadlines.add(1_000, () => fired.push("first"))
      deadlines.add(2_000, () => fired.push("second"))
      const cancelThird = deadlines.add(3_000, () => fired.push("third"))
      cancelFirst()
      cancelThird()
      cancelThird() // idempotent
      expect(deadlines.size()).toBe(1)
      yield* TestClock.adjust(5_000)
      yield* settle
      expect(fired).toEqual(["second"])
      expect(deadlines.size()).toBe(0)
    }))

  it.scoped("an entry added while the timer is idle is armed; an already-passed deadline fires at once", () =>
    Effect.gen(function*() {
      const deadlines = yield* Deadlines.make
      const fired: Array<string> = []
      yield* settle
      yield* TestClock.adjust(1_000)
      deadlines.add(500, () => fired.push("past"))
      deadlines.add(1_500, () => fired.push("soon"))
      yield* settle
      expect(fired).toEqual(["past"])
      yield* TestClock.adjust(500)
      yield* settle
      expect(fired).toEqual(["past", "soon"])
    }))

  // With the former sorted list, each insertion walked back from the tail past every later entry: 100,000 descending
  // deadlines cost ~5·10⁹ steps (minutes of CPU). The heap takes O(log n) per insertion whatever the order. These
  // tests assert behaviour only (order, emptiness), never time — a quadratic structure would simply run for minutes.
  it.scoped("100,000 descending deadlines fire in deadline order (ties in insertion order), armed once, none left", () =>
    Effect.gen(function*() {
      const deadlines = yield* Deadlines.make
      const n = 100_000
      // 100 distinct deadlines, 1,000 entries each, descending (TestClock steps through each distinct deadline; a
      // sorted list still walks past every earlier group: ~5·10⁹ steps)
      const deadlineOf = (i: number) => 1_000 + Math.floor((n - 1 - i) / 1_000) * 10
      const fired: Array<number> = []
      for (let i = 0; i < n; i++) deadlines.add(deadlineOf(i), () => fired.push(i))
      expect(deadlines.size()).toBe(n)
      yield* settle
      // the burst armed the timer once: one sleep, until the earliest deadline
      expect(Chunk.toReadonlyArray(yield* TestClock.sleeps())).toEqual([1_000])
      yield* TestClock.adjust(1_000 + 50 * 10 - 1) // just before the 51st distinct deadline
      yield* settle
      expect(fired.length).toBe(n / 2)
      yield* TestClock.adjust(50 * 10)
      yield* settle
      expect(fired.length).toBe(n)
      for (let k = 1; k < n; k++) {
        const [a, b] = [fired[k - 1]!, fired[k]!]
        const inOrder = deadlineOf(a) < deadlineOf(b) || (deadlineOf(a) === deadlineOf(b) && a < b)
        if (!inOrder) expect.fail(`entry ${b} fired after ${a}`)
      }
      expect(deadlines.size()).toBe(0)
    }))

  it.scoped("100,000 distinct descending deadlines already due fire at once, in order", () =>
    Effect.gen(function*() {
      const deadlines = yield* Deadlines.make
      const n = 100_000
      yield* TestClock.adjust(n + 1)
      const fired: Array<number> = []
      for (let at = n; at >= 1; at--) deadlines.add(at, () => fired.push(at))
      yield* settle
      expect(fired.length).toBe(n)
      for (let k = 0; k < n; k++) if (fired[k] !== k + 1) expect.fail(`deadline ${fired[k]} fired at position ${k}`)
      expect(deadlines.size()).toBe(0)
    }))

  it.scoped("100,000 cancelled entries leave nothing behind; the rest still fire in order", () =>
    Effect.gen(function*() {
      const deadlines = yield* Deadlines.make
      const n = 100_000
      const fired: Array<number> = []
      const cancels: Array<() => void> = []
      // an order no list would like: interleaved descending and ascending halves
      for (let i = 0; i < n; i++) {
        const at = 1_000 + (i % 2 === 0 ? n - i : n + i)
        cancels.push(deadlines.add(at, () => fired.push(at)))
      }
      const keep = deadlines.add(500_000, () => fired.push(-1))
      // cancel in yet another order: from the middle outwards
      for (let k = 0; k < n / 2; k++) {
        cancels[n / 2 + k]!()
        cancels[n / 2 - 1 - k]!()
      }
      for (const cancel of cancels) cancel() // idempotent
      expect(deadlines.size()).toBe(1)
      yield* TestClock.adjust(1_000_000)
      yield* settle
      expect(fired).toEqual([-1])
      expect(deadlines.size()).toBe(0)
      keep()
      expect(deadlines.size()).toBe(0)
    }))

  it.scoped("entries added while firing, and after the timer ended, are armed and fire", () =>
    Effect.gen(function*() {
      const deadlines = yield* Deadlines.make
      const fired: Array<string> = []
      deadlines.add(100, () => {
        fired.push("first")
        deadlines.add(50, () => fired.push("already due, added while firing"))
        deadlines.add(300, () => fired.push("later, added while firing"))
      })
      yield* TestClock.adjust(100)
      yield* settle
      expect(fired).toEqual(["first", "already due, added while firing"])
      yield* TestClock.adjust(200)
      yield* settle
      expect(fired).toEqual(["first", "already due, added while firing", "later, added while firing"])
      expect(deadlines.size()).toBe(0)
      deadlines.add(1_000, () => fired.push("after idle"))
      yield* TestClock.adjust(1_000)
      yield* settle
      expect(fired.at(-1)).toBe("after idle")
    }))

  it.scoped("any mix of adds and cancels fires exactly the live entries, by deadline then insertion (property)", () =>
    Effect.gen(function*() {
      yield* TestClock.adjust(100) // every deadline below is in the past: one wake fires them all, in order
      const runtime = yield* Effect.runtime<never>()
      const ops = fc.array(
        fc.oneof(
          fc.record({ add: fc.integer({ min: 0, max: 50 }) }),
          fc.record({ cancel: fc.nat() })
        ),
        { maxLength: 300 }
      )
      yield* Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(ops, async (steps) => {
            const fired: Array<number> = []
            const model: Array<{ deadline: number; n: number; live: boolean }> = []
            await Runtime.runPromise(runtime)(Effect.scoped(Effect.gen(function*() {
              const deadlines = yield* Deadlines.make
              const cancels: Array<() => void> = []
              for (const step of steps) {
                if ("add" in step) {
                  const n = model.length
                  model.push({ deadline: step.add, n, live: true })
                  cancels.push(deadlines.add(step.add, () => fired.push(n)))
                } else if (model.length > 0) {
                  const k = step.cancel % model.length
                  cancels[k]!()
                  model[k]!.live = false
                }
              }
              expect(deadlines.size()).toBe(model.filter((e) => e.live).length)
              yield* settle
              expect(deadlines.size()).toBe(0)
            })))
            const expected = model.filter((e) => e.live).sort((a, b) => a.deadline - b.deadline || a.n - b.n).map((e) => e.n)
            expect(fired).toEqual(expected)
          }),
          { numRuns: 200 }
        )
      )
    }))
})
