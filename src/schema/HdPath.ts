/**
 * HD derivation paths (BIP32 / SLIP-0010 syntax) and alknet's well-known paths (SPEC §12).
 *
 * A path starts with `m`; each further segment is an index from 0 to 2^31 − 1, hardened when it ends in `'` or
 * `h`: `m/74'/0'/0'/0'` and `m/74h/0h/0h/0h` are the same path. Coin type 74' is unallocated in SLIP-0044.
 */
import { Either, Schema } from "effect"
import * as VaultError from "../errors/VaultError.js"

/** Offset added to a hardened index. */
export const HARDENED_OFFSET = 0x80000000

/** The node's identity key (Ed25519; its 32-byte seed is the node's TLS key). Same as `device(0)`. */
export const nodeIdentity = "m/74'/0'/0'/0'"

/** The SSH host key. */
export const sshHost = "m/74'/0'/1'/0'"

/** Device `n`'s key: `m/74'/0'/0'/{n}'`. Device 0 is the node itself (`nodeIdentity`). */
export const device = (n: number): string => `m/74'/0'/0'/${checkIndex(n, "device number")}'`

/**
 * The AES-256-GCM key for `EncryptedData.key_version` `version` ≥ 2: `m/74'/2'/0'/{version − 2}'`.
 * Version 1 is the legacy password-based format and has no path.
 */
export const encryptionKey = (version: number): string => `m/74'/2'/0'/${checkIndex(version - 2, "key version − 2")}'`

/** The highest `key_version` that names a key (its index is 2^31 − 1). */
export const MAX_KEY_VERSION = HARDENED_OFFSET + 1

/** One step of a path: `index` is below 2^31; `hardened` adds 2^31 when deriving. */
export interface Segment {
  readonly index: number
  readonly hardened: boolean
}

/** A parsed path. `path` is its canonical spelling (`'` for hardened, no leading zeros). */
export interface Parsed {
  readonly path: string
  readonly segments: ReadonlyArray<Segment>
}

const SEGMENT = /^(\d+)(['h]?)$/
const MAX_DEPTH = 255

/** Parse a path; an `InvalidPath` error says which segment is wrong and why. */
export const parse = (path: string): Either.Either<Parsed, VaultError.VaultError> => {
  const parts = path.split("/")
  if (parts[0] !== "m") return Either.left(VaultError.invalidPath(path, `it must start with "m"`))
  if (parts.length - 1 > MAX_DEPTH) {
    return Either.left(VaultError.invalidPath(path, `it is deeper than ${MAX_DEPTH} levels`))
  }
  const segments: Array<Segment> = []
  for (let i = 1; i < parts.length; i++) {
    const part = parts[i]!
    const match = SEGMENT.exec(part)
    if (match === null) {
      const problem = part === ""
        ? `segment ${i} is empty`
        : `segment ${i} (${JSON.stringify(part)}) is not an index: write digits, ending in ' or h when hardened`
      return Either.left(VaultError.invalidPath(path, problem))
    }
    const index = Number(match[1])
    if (index >= HARDENED_OFFSET) {
      return Either.left(
        VaultError.invalidPath(path, `segment ${i} (${JSON.stringify(part)}) is out of range: indices stop at 2147483647`)
      )
    }
    segments.push({ index, hardened: match[2] !== "" })
  }
  const canonical = ["m", ...segments.map((s) => s.hardened ? `${s.index}'` : `${s.index}`)].join("/")
  return Either.right({ path: canonical, segments })
}

/** Parse a path whose every segment must be hardened (SLIP-0010 Ed25519 defines nothing else). */
export const parseHardened = (path: string): Either.Either<Parsed, VaultError.VaultError> =>
  Either.flatMap(parse(path), (parsed) => {
    const soft = parsed.segments.findIndex((s) => !s.hardened)
    return soft === -1 ? Either.right(parsed) : Either.left(
      VaultError.invalidPath(
        path,
        `segment ${soft + 1} (${parsed.segments[soft]!.index}) is not hardened: Ed25519 (SLIP-0010) derives hardened segments only`
      )
    )
  })

/** A string that is a valid derivation path, e.g. for config files. */
export const Path = Schema.String.pipe(
  Schema.filter((s) => Either.match(parse(s), { onLeft: (e) => e.message, onRight: () => true })),
  Schema.annotations({ identifier: "HdPath", description: "a BIP32 derivation path such as m/74'/0'/0'/0'" })
)

const checkIndex = (n: number, what: string): number => {
  if (!Number.isInteger(n) || n < 0 || n >= HARDENED_OFFSET) {
    throw new RangeError(`${what} must be an integer from 0 to 2147483647, got ${n}`)
  }
  return n
}
