import { describe, expect, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
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
})
