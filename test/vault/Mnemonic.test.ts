import { describe, expect, it } from "@effect/vitest"
import { HDKey } from "@scure/bip32"
import { Either } from "effect"
import vectors from "../fixtures/bip39-english.json" with { type: "json" }
import * as Mnemonic from "../../src/vault/Mnemonic.js"

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")
const ABOUT = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"

describe("BIP39 (all 24 English vectors, passphrase TREZOR)", () => {
  it("has 24 vectors", () => {
    expect(vectors.vectors).toHaveLength(24)
    expect(vectors.passphrase).toBe("TREZOR")
  })

  describe.each(vectors.vectors.map((v, i) => ({ ...v, i })))("vector $i", (vector) => {
    it("validates the mnemonic and derives the seed", () => {
      const canonical = Either.getOrThrow(Mnemonic.canonical(vector.mnemonic))
      expect(canonical).toBe(vector.mnemonic)
      expect(hex(Mnemonic.toSeed(canonical, vectors.passphrase))).toBe(vector.seed)
    })

    it("encodes the entropy as the mnemonic", () => {
      expect(Mnemonic.fromEntropy(Buffer.from(vector.entropy, "hex"))).toBe(vector.mnemonic)
    })

    it("gives the BIP32 master xprv from the seed", () => {
      const seed = Mnemonic.toSeed(vector.mnemonic, vectors.passphrase)
      expect(HDKey.fromMasterSeed(seed).privateExtendedKey).toBe(vector.xprv)
    })
  })
})

describe("Mnemonic.canonical", () => {
  const failure = (mnemonic: string) => Either.getOrThrow(Either.flip(Mnemonic.canonical(mnemonic)))

  it("ignores surrounding and repeated whitespace, so the seed does not change", () => {
    const messy = `  ${ABOUT.split(" ").join(" \t ")}\n`
    expect(Either.getOrThrow(Mnemonic.canonical(messy))).toBe(ABOUT)
  })

  it("rejects a word count BIP39 does not define, saying how many words it got", () => {
    for (const words of [0, 1, 11, 13, 25]) {
      const error = failure(Array(words).fill("abandon").join(" "))
      expect(error.reason).toBe("InvalidMnemonic")
      expect(error.problem).toBe("WordCount")
      expect(error.message).toContain(`got ${words}`)
    }
  })

  it("names the position of an unknown word, never the word", () => {
    const words = ABOUT.split(" ")
    words[6] = "hunter2secret"
    const error = failure(words.join(" "))
    expect(error.problem).toBe("UnknownWord")
    expect(error.position).toBe(7)
    expect(error.message).toContain("word 7")
    expect(error.message).not.toContain("hunter2secret")
  })

  it("is strict about case: a capitalised word is not in the list", () => {
    const error = failure(`Abandon${ABOUT.slice("abandon".length)}`)
    expect(error.problem).toBe("UnknownWord")
    expect(error.position).toBe(1)
  })

  it("rejects a bad checksum without quoting any word", () => {
    const error = failure(ABOUT.replace(/about$/, "abandon"))
    expect(error.problem).toBe("Checksum")
    expect(error.message).toContain("checksum")
    expect(error.message).not.toContain("abandon")
  })
})

describe("Mnemonic.generate", () => {
  it.each([12, 15, 18, 21, 24] as const)("makes a valid, fresh %i-word mnemonic", (words) => {
    const a = Mnemonic.generate(words)
    const b = Mnemonic.generate(words)
    expect(a.split(" ")).toHaveLength(words)
    expect(Either.isRight(Mnemonic.canonical(a))).toBe(true)
    expect(a).not.toBe(b)
  })
})
