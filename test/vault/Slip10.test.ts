import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import vector from "../fixtures/slip10-ed25519-vector1.json" with { type: "json" }
import * as HdPath from "../../src/schema/HdPath.js"
import * as Slip10 from "../../src/vault/Slip10.js"

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")
const seed = Buffer.from(vector.seed, "hex")

describe("SLIP-0010 ed25519, test vector 1", () => {
  it("covers every level of the chain", () => {
    expect(vector.chain.map((level) => level.path)).toEqual([
      "m",
      "m/0'",
      "m/0'/1'",
      "m/0'/1'/2'",
      "m/0'/1'/2'/2'",
      "m/0'/1'/2'/2'/1000000000'"
    ])
  })

  it.each(vector.chain)("$path: private key, chain code and public key", (level) => {
    const path = Either.getOrThrow(HdPath.parseHardened(level.path))
    const node = Slip10.derive(seed, path.segments.map((s) => s.index))
    expect(hex(node.key)).toBe(level.private)
    expect(hex(node.chainCode)).toBe(level.chainCode)
    expect(`00${hex(Slip10.publicKey(node.key))}`).toBe(level.public)
  })

  it("derives each level from its parent with `child`", () => {
    let node = Slip10.master(seed)
    const indices = [0, 1, 2, 2, 1000000000]
    for (const [i, level] of vector.chain.slice(1).entries()) {
      node = Slip10.child(node, indices[i]!)
      expect(hex(node.key)).toBe(level.private)
      expect(hex(node.chainCode)).toBe(level.chainCode)
    }
  })

  it("wipe overwrites the key and chain code with zeros", () => {
    const node = Slip10.derive(seed, [0])
    Slip10.wipe(node)
    expect(node.key.every((b) => b === 0)).toBe(true)
    expect(node.chainCode.every((b) => b === 0)).toBe(true)
  })
})
