/**
 * BIP39 English mnemonics: validation with a precise reason, seed derivation, generation.
 *
 * Internal to the vault. Mnemonics are plain strings here; the Vault service keeps them `Redacted` at its edge.
 */
import { entropyToMnemonic, mnemonicToEntropy } from "@scure/bip39"
import { wordlist } from "@scure/bip39/wordlists/english.js"
import { Either } from "effect"
import { pbkdf2Sync, randomBytes } from "node:crypto"
import * as VaultError from "../errors/VaultError.js"

/** The BIP39 mnemonic lengths: 128 to 256 bits of entropy, 32 bits per 3 words. */
export type WordCount = 12 | 15 | 18 | 21 | 24

export const isWordCount = (n: unknown): n is WordCount => n === 12 || n === 15 || n === 18 || n === 21 || n === 24

const english = new Set(wordlist)

/**
 * Check a mnemonic and return its canonical form: NFKD-normalised, words separated by single spaces (so stray
 * whitespace, such as a file's final newline, does not change the seed). Errors name a word's position, never
 * the word.
 */
export const canonical = (mnemonic: string): Either.Either<string, VaultError.VaultError> => {
  const trimmed = mnemonic.normalize("NFKD").trim()
  const words = trimmed === "" ? [] : trimmed.split(/\s+/)
  if (!isWordCount(words.length)) return Either.left(VaultError.mnemonicWordCount(words.length))
  const unknown = words.findIndex((word) => !english.has(word))
  if (unknown !== -1) return Either.left(VaultError.mnemonicUnknownWord(unknown + 1))
  const joined = words.join(" ")
  try {
    mnemonicToEntropy(joined, wordlist).fill(0)
  } catch {
    // Every word is in the list and the count is right, so the only failure left is the checksum. The library's
    // own message is not passed on: for other inputs it would quote a word.
    return Either.left(VaultError.mnemonicChecksum())
  }
  return Either.right(joined)
}

/** BIP39 seed: PBKDF2-HMAC-SHA512(NFKD(mnemonic), "mnemonic" + NFKD(passphrase), 2048 rounds) → 64 bytes. */
export const toSeed = (canonicalMnemonic: string, passphrase = ""): Uint8Array => {
  const password = Buffer.from(canonicalMnemonic.normalize("NFKD"), "utf8")
  const salt = Buffer.from(`mnemonic${passphrase.normalize("NFKD")}`, "utf8")
  try {
    return pbkdf2Sync(password, salt, 2048, 64, "sha512")
  } finally {
    password.fill(0)
    salt.fill(0)
  }
}

/** The mnemonic encoding `entropy` (16, 20, 24, 28 or 32 bytes). */
export const fromEntropy = (entropy: Uint8Array): string => entropyToMnemonic(entropy, wordlist)

/** A fresh mnemonic of `words` words from the system CSPRNG. */
export const generate = (words: WordCount): string => {
  const entropy = randomBytes((words / 3) * 4)
  try {
    return fromEntropy(entropy)
  } finally {
    entropy.fill(0)
  }
}
