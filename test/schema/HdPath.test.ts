import { describe, expect, it } from "@effect/vitest"
import { Either, Schema } from "effect"
import * as HdPath from "../../src/schema/HdPath.js"

const parsed = (path: string) => Either.getOrThrow(HdPath.parse(path))
const problem = (path: string) => Either.getOrThrow(Either.flip(HdPath.parse(path)))

describe("HdPath.parse", () => {
  it("reads ' and h as hardened and spells the path canonically", () => {
    expect(parsed("m/74h/0'/1/2147483647h")).toEqual({
      path: "m/74'/0'/1/2147483647'",
      segments: [
        { index: 74, hardened: true },
        { index: 0, hardened: true },
        { index: 1, hardened: false },
        { index: 2147483647, hardened: true }
      ]
    })
    expect(parsed("m/74h/0h/0h/0h").path).toBe(HdPath.nodeIdentity)
    expect(parsed("m/007'").path).toBe("m/7'")
  })

  it("accepts the master path m", () => {
    expect(parsed("m")).toEqual({ path: "m", segments: [] })
  })

  it.each([
    ["", `must start with "m"`],
    ["74'/0'", `must start with "m"`],
    ["M/74'", `must start with "m"`],
    ["m/", "segment 1 is empty"],
    ["m/74'//0'", "segment 2 is empty"],
    ["m/74'/x'", `segment 2 ("x'") is not an index`],
    ["m/74'/0'/-1", `segment 3 ("-1") is not an index`],
    ["m/74H", `segment 1 ("74H") is not an index`],
    ["m/1.5'", `segment 1 ("1.5'") is not an index`],
    ["m/2147483648'", `segment 1 ("2147483648'") is out of range`]
  ])("rejects %j, naming the problem", (path, message) => {
    const error = problem(path)
    expect(error.reason).toBe("InvalidPath")
    expect(error.message).toContain(JSON.stringify(path))
    expect(error.message).toContain(message)
  })

  it("rejects paths deeper than BIP32 allows", () => {
    expect(problem(`m${"/0'".repeat(256)}`).message).toContain("deeper than 255")
    expect(Either.isRight(HdPath.parse(`m${"/0'".repeat(255)}`))).toBe(true)
  })
})

describe("HdPath.parseHardened", () => {
  it("names the first segment that is not hardened", () => {
    const error = Either.getOrThrow(Either.flip(HdPath.parseHardened("m/74'/0'/5/0'")))
    expect(error.reason).toBe("InvalidPath")
    expect(error.message).toContain("segment 3 (5) is not hardened")
  })
})

describe("well-known paths", () => {
  it("are the SPEC §12 paths", () => {
    expect(HdPath.nodeIdentity).toBe("m/74'/0'/0'/0'")
    expect(HdPath.sshHost).toBe("m/74'/0'/1'/0'")
    expect(HdPath.device(0)).toBe(HdPath.nodeIdentity)
    expect(HdPath.device(7)).toBe("m/74'/0'/0'/7'")
    expect(HdPath.encryptionKey(2)).toBe("m/74'/2'/0'/0'")
    expect(HdPath.encryptionKey(3)).toBe("m/74'/2'/0'/1'")
    expect(HdPath.encryptionKey(HdPath.MAX_KEY_VERSION)).toBe("m/74'/2'/0'/2147483647'")
  })

  it("refuse numbers that name no path", () => {
    expect(() => HdPath.encryptionKey(1)).toThrow(RangeError)
    expect(() => HdPath.encryptionKey(HdPath.MAX_KEY_VERSION + 1)).toThrow(RangeError)
    expect(() => HdPath.device(-1)).toThrow(RangeError)
    expect(() => HdPath.device(1.5)).toThrow(/device number must be an integer/)
  })
})

describe("HdPath.Path schema", () => {
  it("accepts valid paths and explains invalid ones", () => {
    const decode = Schema.decodeUnknownEither(HdPath.Path)
    expect(Either.isRight(decode("m/44'/60'/0'/0/0"))).toBe(true)
    const bad = decode("m/44'/x")
    expect(Either.isLeft(bad)).toBe(true)
    if (Either.isLeft(bad)) expect(String(bad.left)).toContain(`segment 2 ("x") is not an index`)
  })
})
