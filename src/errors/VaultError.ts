/**
 * The one error type of the vault (SPEC §12). `reason` says what went wrong; `message` says it in words a user
 * can act on. Messages are built here, from non-secret facts only: a mnemonic problem names the word's position,
 * never the word; a path is not secret and is quoted.
 */
import { Schema } from "effect"

export const Reason = Schema.Literal(
  /** An operation that needs the seed ran while the vault was locked. */
  "Locked",
  /** `unlock` / `unlockNew` on a vault that is already unlocked. */
  "AlreadyUnlocked",
  /** The mnemonic is not valid BIP39 English; `problem` says why. */
  "InvalidMnemonic",
  /** A derivation path does not parse, or does not suit the curve. */
  "InvalidPath",
  /** `key_version` 1: the reference's legacy password-based format, which the vault cannot decrypt. */
  "LegacyKeyVersion",
  /** A `key_version` that names no encryption key (not an integer from 2 to 2^31 + 1). */
  "InvalidKeyVersion",
  /** An `EncryptedData` blob whose fields have the wrong shape (IV length, missing tag, non-UTF-8 plaintext). */
  "MalformedData",
  /** AES-GCM authentication failed: the blob was altered, or was made under another mnemonic or key version. */
  "Authentication",
  /** The mnemonic file could not be read. */
  "MnemonicFile"
)
export type Reason = typeof Reason.Type

/** What is wrong with an invalid mnemonic. */
export const MnemonicProblem = Schema.Literal("WordCount", "UnknownWord", "Checksum")
export type MnemonicProblem = typeof MnemonicProblem.Type

export class VaultError extends Schema.TaggedError<VaultError>("alknet/VaultError")("VaultError", {
  reason: Reason,
  message: Schema.String,
  /** For `InvalidMnemonic`: which check failed. */
  problem: Schema.optional(MnemonicProblem),
  /** For `InvalidMnemonic` / `UnknownWord`: the 1-based position of the first word not in the list. */
  position: Schema.optional(Schema.Int)
}) {}

export const locked = (): VaultError =>
  new VaultError({ reason: "Locked", message: "the vault is locked: unlock it with its mnemonic first" })

export const alreadyUnlocked = (): VaultError =>
  new VaultError({
    reason: "AlreadyUnlocked",
    message: "the vault is already unlocked: lock it before unlocking it with another mnemonic"
  })

export const mnemonicWordCount = (words: number): VaultError =>
  new VaultError({
    reason: "InvalidMnemonic",
    problem: "WordCount",
    message: `invalid mnemonic: expected 12, 15, 18, 21 or 24 words, got ${words}`
  })

export const mnemonicUnknownWord = (position: number): VaultError =>
  new VaultError({
    reason: "InvalidMnemonic",
    problem: "UnknownWord",
    position,
    message: `invalid mnemonic: word ${position} is not in the BIP39 English word list`
  })

export const mnemonicChecksum = (): VaultError =>
  new VaultError({
    reason: "InvalidMnemonic",
    problem: "Checksum",
    message: "invalid mnemonic: the checksum does not match (a word is wrong or the words are out of order)"
  })

export const invalidPath = (path: string, problem: string): VaultError =>
  new VaultError({ reason: "InvalidPath", message: `invalid derivation path ${JSON.stringify(path)}: ${problem}` })

export const legacyKeyVersion = (): VaultError =>
  new VaultError({
    reason: "LegacyKeyVersion",
    message: "key_version 1 is the legacy password-based format: this vault cannot decrypt it"
  })

export const invalidKeyVersion = (version: unknown): VaultError =>
  new VaultError({
    reason: "InvalidKeyVersion",
    message: `key_version ${String(version)} names no encryption key: versions are integers from 2 to 2147483649`
  })

export const malformedData = (problem: string): VaultError =>
  new VaultError({ reason: "MalformedData", message: `malformed encrypted data: ${problem}` })

export const authentication = (): VaultError =>
  new VaultError({
    reason: "Authentication",
    message:
      "decryption failed: the data was altered, or it was encrypted under another mnemonic, passphrase or key version"
  })

export const mnemonicFile = (path: string, cause: string): VaultError =>
  new VaultError({ reason: "MnemonicFile", message: `cannot read the mnemonic file ${JSON.stringify(path)}: ${cause}` })
