/**
 * Limits for JSON a caller (or a file) controls.
 *
 * V8's `JSON.parse` accepts 100,000 levels of nesting, but much of what runs on a parsed value recurses once per
 * level (`JSON.stringify`, Schema decoding, error formatting, `inspect` in logs) and overflows the stack long before.
 * Wherever JSON enters, its depth is checked first with {@link exceedsDepth}, which walks the value with an explicit
 * stack (no recursion, so it cannot overflow itself) and stops at the first container past the limit.
 *
 * Depth counts containers: a scalar is 0, `[]` and `{}` are 1, `{"a":[1]}` is 2.
 */

/** The default maximum nesting depth of caller input and of the config file: 64 levels. */
export const DEFAULT_MAX_DEPTH = 64

/** Arrays and plain objects (what `JSON.parse` makes); other objects (class instances, buffers) are leaves. */
const isContainer = (value: unknown): value is object => {
  if (typeof value !== "object" || value === null) return false
  if (Array.isArray(value)) return true
  const proto = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}

/** A container whose members are all primitives (the common case: `{n, s}`, `{i}`): one level, no walk needed. */
const flat = (value: object): boolean => {
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const member: unknown = value[i]
      if (typeof member === "object" && member !== null) return false
    }
    return true
  }
  for (const key in value) {
    const member: unknown = (value as Record<string, unknown>)[key]
    if (typeof member === "object" && member !== null) return false
  }
  return true
}

/**
 * Whether `value` nests arrays or plain objects deeper than `maxDepth` levels. Iterative; O(size of the value) for a
 * tree (all parsed JSON). A value built in-process may share or cycle: a shared container is walked again only when
 * reached deeper than before (at most `maxDepth` times), and a cycle is too deep.
 */
export const exceedsDepth = (value: unknown, maxDepth: number = DEFAULT_MAX_DEPTH): boolean => {
  if (!isContainer(value)) return false
  if (maxDepth < 1) return true
  if (flat(value)) return false
  const stack: Array<object> = [value]
  const depths: Array<number> = [1]
  /** The deepest level each container was reached at (only containers below the root). */
  let seen: Map<object, number> | undefined
  const push = (child: unknown, depth: number): boolean => {
    if (!isContainer(child)) return false
    if (depth > maxDepth) return true
    seen ??= new Map()
    const before = seen.get(child)
    if (before !== undefined && before >= depth) return false
    seen.set(child, depth)
    stack.push(child)
    depths.push(depth)
    return false
  }
  while (stack.length > 0) {
    const node = stack.pop()!
    const childDepth = depths.pop()! + 1
    if (Array.isArray(node)) {
      for (let i = 0; i < node.length; i++) if (push(node[i], childDepth)) return true
    } else {
      for (const key in node) {
        if (Object.prototype.hasOwnProperty.call(node, key) && push((node as Record<string, unknown>)[key], childDepth)) {
          return true
        }
      }
    }
  }
  return false
}

/** The message for a value past the limit: `input is nested deeper than 64 levels`. */
export const tooDeep = (what: string, maxDepth: number = DEFAULT_MAX_DEPTH): string =>
  `${what} is nested deeper than ${maxDepth} levels`
