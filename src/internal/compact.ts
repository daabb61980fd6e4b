/**
 * Drop the `undefined` properties of an options object, so it can be passed where optional properties must be
 * absent rather than `undefined` (`exactOptionalPropertyTypes`).
 */
export type Compact<A> =
  & { readonly [K in keyof A as undefined extends A[K] ? never : K]: A[K] }
  & { readonly [K in keyof A as undefined extends A[K] ? K : never]?: Exclude<A[K], undefined> }

export const compact = <A extends object>(a: A): Compact<A> => {
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(a)) if (value !== undefined) out[key] = value
  return out as Compact<A>
}
