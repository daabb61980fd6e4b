/**
 * A key derived by the vault: `{ keyType, path, publicKey, privateKey }`, the private part `Redacted`.
 *
 * The private key never shows through `JSON.stringify`, `String()`, `util.inspect`, Effect's logger, or the
 * JSON schema below: all of them print `"<redacted>"` in its place and the public key as hex. Decoding such a
 * payload fails with a message that says why, so a redacted key can never be mistaken for a real one.
 *
 * A `DerivedKey` returned by the vault is a copy its receiver owns: locking the vault does not wipe it. Call
 * `wipe` when done with it.
 */
import { Either, ParseResult, Redacted, Schema } from "effect"
import { NodeInspectSymbol } from "effect/Inspectable"

export const KeyType = Schema.Literal("Ed25519", "Secp256k1")
export type KeyType = typeof KeyType.Type

/** What every serialization writes instead of the private key. */
export const REDACTED = "<redacted>"

export class DerivedKey extends Schema.Class<DerivedKey>("alknet/DerivedKey")({
  keyType: KeyType,
  /** The canonical derivation path, e.g. `m/74'/0'/0'/0'`. */
  path: Schema.String,
  /** Ed25519: 32 bytes (RFC 8032). secp256k1: 33 bytes, compressed SEC1. */
  publicKey: Schema.Uint8ArrayFromSelf,
  /** Ed25519: the 32-byte RFC 8032 private key seed (usable as a TLS raw key). secp256k1: the 32-byte scalar. */
  privateKey: Schema.RedactedFromSelf(Schema.Uint8ArrayFromSelf)
}) {
  toJSON() {
    return {
      _id: "DerivedKey",
      keyType: this.keyType,
      path: this.path,
      publicKey: Buffer.from(this.publicKey).toString("hex"),
      privateKey: REDACTED
    }
  }
  override toString() {
    return `DerivedKey(${this.keyType} ${this.path} ${Buffer.from(this.publicKey).toString("hex")} privateKey=${REDACTED})`
  }
  [NodeInspectSymbol]() {
    return this.toJSON()
  }
}

/** Overwrite the key's private bytes with zeros and drop them from the `Redacted` box. */
export const wipe = (key: DerivedKey): void => {
  Redacted.value(key.privateKey).fill(0)
  Redacted.unsafeWipe(key.privateKey)
}

const Hex = Schema.String.pipe(Schema.pattern(/^(?:[0-9a-f]{2})*$/), Schema.annotations({ identifier: "Hex" }))

// A plain Uint8Array, not a Buffer: a Buffer's toJSON would print its bytes.
const fromHex = (hex: string): Uint8Array => new Uint8Array(Buffer.from(hex, "hex"))

/** The JSON form written by `toJSON`. */
export const Json = Schema.Struct({ keyType: KeyType, path: Schema.String, publicKey: Hex, privateKey: Schema.String })

/**
 * `DerivedKey` ⇄ its JSON form. Encoding writes `"<redacted>"` for the private key; decoding a redacted payload
 * fails clearly (decoding a lowercase-hex private key works, for keys kept in a secret store of your own).
 */
export const DerivedKeyFromJson = Schema.transformOrFail(Json, Schema.typeSchema(DerivedKey), {
  strict: true,
  decode: (json, _, ast) => {
    if (json.privateKey === REDACTED) {
      return ParseResult.fail(
        new ParseResult.Type(
          ast,
          json,
          "privateKey is redacted: a DerivedKey's private key is never serialized, so this payload holds no key — derive it again from the vault"
        )
      )
    }
    const privateKey = Schema.decodeEither(Hex)(json.privateKey)
    return Either.isLeft(privateKey)
      ? ParseResult.fail(new ParseResult.Type(ast, json, "privateKey must be lowercase hex"))
      : ParseResult.succeed(
        new DerivedKey({
          keyType: json.keyType,
          path: json.path,
          publicKey: fromHex(json.publicKey),
          privateKey: Redacted.make(fromHex(privateKey.right))
        })
      )
  },
  encode: (key) => {
    const { keyType, path, publicKey, privateKey } = key.toJSON()
    return ParseResult.succeed({ keyType, path, publicKey, privateKey })
  }
})

/** Decode a `DerivedKey` from a JSON string (see `DerivedKeyFromJson`). */
export const decodeJson = Schema.decodeUnknownEither(Schema.parseJson(DerivedKeyFromJson))
