import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import * as Config from "../../src/schema/Config.js"
import * as Json from "../../src/schema/Json.js"

/** `levels` nested arrays around `inner`, built as text and parsed (as it arrives off the wire). */
const nestedArrays = (levels: number, inner = "1") => JSON.parse("[".repeat(levels) + inner + "]".repeat(levels))
const nestedObjects = (levels: number) => JSON.parse("{\"a\":".repeat(levels) + "1" + "}".repeat(levels))

describe("Json.exceedsDepth", () => {
  it("counts containers: scalars are 0, [] and {} are 1", () => {
    for (const scalar of [null, 1, "x", true]) expect(Json.exceedsDepth(scalar, 0)).toBe(false)
    expect(Json.exceedsDepth([], 0)).toBe(true)
    expect(Json.exceedsDepth([], 1)).toBe(false)
    expect(Json.exceedsDepth({ a: [1] }, 1)).toBe(true)
    expect(Json.exceedsDepth({ a: [1] }, 2)).toBe(false)
    expect(Json.exceedsDepth({ a: 1, b: { c: [{}] } }, 3)).toBe(true)
    expect(Json.exceedsDepth({ a: 1, b: { c: [{}] } }, 4)).toBe(false)
  })

  it("the default is 64 levels, exactly", () => {
    expect(Json.DEFAULT_MAX_DEPTH).toBe(64)
    expect(Json.exceedsDepth(nestedArrays(64))).toBe(false)
    expect(Json.exceedsDepth(nestedArrays(65))).toBe(true)
    expect(Json.exceedsDepth(nestedObjects(64))).toBe(false)
    expect(Json.exceedsDepth(nestedObjects(65))).toBe(true)
    // the deep branch is found wherever it is: after wide siblings, in the last key
    expect(Json.exceedsDepth({ a: Array.from({ length: 1000 }, () => ({})), z: nestedArrays(64) })).toBe(true)
  })

  it("walks 100,000 levels without recursion (JSON.parse accepts them, JSON.stringify does not)", () => {
    const deep = nestedArrays(100_000)
    expect(() => JSON.stringify(deep)).toThrow(RangeError)
    expect(Json.exceedsDepth(deep)).toBe(true)
    expect(Json.exceedsDepth(nestedObjects(100_000), 200_000)).toBe(false)
  })

  it("in-process values: a cycle is too deep; shared containers count at their deepest; class instances are leaves", () => {
    const cycle: Array<unknown> = []
    cycle.push(cycle)
    expect(Json.exceedsDepth(cycle)).toBe(true)
    const shared = nestedArrays(60)
    // reached first at depth 2, then at depth 4: the second sighting is deeper and counts
    expect(Json.exceedsDepth({ a: shared, b: [[shared]] }, 62)).toBe(true)
    expect(Json.exceedsDepth({ a: shared, b: [[shared]] }, 63)).toBe(false)
    // a DAG of 64 levels where every level points twice at the next: 2^64 paths, walked in linear time
    let dag: unknown = 1
    for (let i = 0; i < 64; i++) dag = [dag, dag]
    expect(Json.exceedsDepth(dag)).toBe(false)
    expect(Json.exceedsDepth([dag])).toBe(true)
    expect(Json.exceedsDepth({ at: new Date(0), bytes: new Uint8Array(10) }, 1)).toBe(false)
  })

  it("tooDeep is the message callers see", () => {
    expect(Json.tooDeep("input")).toBe("input is nested deeper than 64 levels")
    expect(Json.tooDeep("config", 8)).toBe("config is nested deeper than 8 levels")
  })
})

describe("Config.decode and nesting", () => {
  it("rejects a document nested deeper than 64 levels with a clear message, before decoding it", () => {
    const deep = `{"peers": ${"[".repeat(100_000)}${"]".repeat(100_000)}}`
    expect(Config.decode(deep)).toEqual(Either.left("config is nested deeper than 64 levels"))
    expect(Config.decode(`{"peers": ${"[".repeat(70)}${"]".repeat(70)}}`)).toEqual(
      Either.left("config is nested deeper than 64 levels")
    )
  })

  it("still names bad JSON and bad fields, and bounds what it repeats of the file", () => {
    const bad = Config.decode("{oops")
    expect(Either.isLeft(bad) && bad.left).toMatch(/^config: not valid JSON: /)
    const long = Config.decode(JSON.stringify({ drain_timeout_ms: "x".repeat(100_000) }))
    expect(Either.isLeft(long) && long.left).toContain("drain_timeout_ms: ")
    expect(Either.isLeft(long) && long.left).toContain("…(truncated, ")
    expect(Either.isLeft(long) && long.left.length).toBeLessThan(600)
  })
})
