/**
 * A strict parser of the Prometheus text exposition format 0.0.4, for the tests: it throws on anything a scraper
 * could misread — a sample outside its family, a family's TYPE after its samples or given twice, a bad name, a label
 * escape other than `\\`, `\"`, `\n`, a duplicate series, a counter not named `_total`, histogram buckets that are not
 * cumulative or lack `le="+Inf"` = `_count`.
 */

export interface Sample {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
}

export interface Family {
  readonly name: string
  readonly type: "counter" | "gauge" | "histogram" | "summary" | "untyped"
  readonly help: string | undefined
  readonly samples: ReadonlyArray<Sample>
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/

const unescape = (text: string, allowQuote: boolean, where: string) =>
  text.replace(/\\(.)/g, (_, c: string) => {
    if (c === "\\") return "\\"
    if (c === "n") return "\n"
    if (c === "\"" && allowQuote) return "\""
    throw new Error(`${where}: bad escape \\${c}`)
  })

const parseValue = (text: string, where: string): number => {
  if (text === "+Inf") return Infinity
  if (text === "-Inf") return -Infinity
  if (text === "NaN") return NaN
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`${where}: bad value ${JSON.stringify(text)}`)
  return Number(text)
}

/** `{a="x",b="y"}` at the start of `text`: the labels and the rest of the line. */
const parseLabels = (text: string, where: string): [Record<string, string>, string] => {
  const labels: Record<string, string> = {}
  let i = 1
  while (text[i] !== "}") {
    const eq = text.indexOf("=", i)
    if (eq < 0) throw new Error(`${where}: label without =`)
    const key = text.slice(i, eq)
    if (!LABEL.test(key)) throw new Error(`${where}: bad label name ${JSON.stringify(key)}`)
    if (text[eq + 1] !== "\"") throw new Error(`${where}: label value not quoted`)
    let j = eq + 2
    let raw = ""
    while (text[j] !== "\"") {
      if (j >= text.length) throw new Error(`${where}: unterminated label value`)
      if (text[j] === "\\") {
        raw += text.slice(j, j + 2)
        j += 2
      } else {
        raw += text[j]
        j++
      }
    }
    if (key in labels) throw new Error(`${where}: label ${key} twice`)
    labels[key] = unescape(raw, true, where)
    i = j + 1
    if (text[i] === ",") i++
    else if (text[i] !== "}") throw new Error(`${where}: expected , or } after a label`)
  }
  return [labels, text.slice(i + 1)]
}

const sampleFamily = (sample: string, family: Family) => {
  if (sample === family.name) return family.type !== "histogram"
  if (family.type === "histogram") return [`${family.name}_bucket`, `${family.name}_sum`, `${family.name}_count`].includes(sample)
  if (family.type === "summary") return [`${family.name}_sum`, `${family.name}_count`].includes(sample)
  return false
}

/** Parse an exposition; throws with the line number on the first violation. */
export const parse = (text: string): Map<string, Family> => {
  if (text !== "" && !text.endsWith("\n")) throw new Error("the exposition must end with a newline")
  const families = new Map<string, { name: string; type: Family["type"]; help: string | undefined; samples: Array<Sample> }>()
  const seenSeries = new Set<string>()
  let current: { name: string; type: Family["type"]; help: string | undefined; samples: Array<Sample> } | undefined
  const family = (name: string, where: string) => {
    let f = families.get(name)
    if (f === undefined) {
      f = { name, type: "untyped", help: undefined, samples: [] }
      families.set(name, f)
    } else if (current !== f) {
      throw new Error(`${where}: family ${name} is not contiguous`)
    }
    current = f
    return f
  }
  const lines = text.split("\n").slice(0, -1)
  lines.forEach((line, n) => {
    const where = `line ${n + 1} (${JSON.stringify(line)})`
    if (line.startsWith("#")) {
      const match = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line)
      if (match === null) return // a comment
      const [, kind, name, rest] = match as unknown as [string, string, string, string]
      if (!NAME.test(name)) throw new Error(`${where}: bad metric name`)
      const f = family(name, where)
      if (kind === "HELP") {
        if (f.help !== undefined) throw new Error(`${where}: HELP twice`)
        f.help = unescape(rest, false, where)
      } else {
        if (f.type !== "untyped" || f.samples.length > 0) throw new Error(`${where}: TYPE twice or after samples`)
        if (!["counter", "gauge", "histogram", "summary", "untyped"].includes(rest)) throw new Error(`${where}: bad type`)
        f.type = rest as Family["type"]
        if (f.type === "counter" && !name.endsWith("_total")) throw new Error(`${where}: a counter must be named *_total`)
      }
      return
    }
    const nameEnd = line.search(/[{ ]/)
    if (nameEnd <= 0) throw new Error(`${where}: not a sample`)
    const name = line.slice(0, nameEnd)
    if (!NAME.test(name)) throw new Error(`${where}: bad metric name`)
    const [labels, rest] = line[nameEnd] === "{" ? parseLabels(line.slice(nameEnd), where) : [{}, line.slice(nameEnd)]
    const fields = rest.trim().split(" ")
    if (!rest.startsWith(" ") || fields.length < 1 || fields.length > 2) throw new Error(`${where}: expected a value`)
    const value = parseValue(fields[0]!, where)
    if (current === undefined || !sampleFamily(name, current)) {
      // An untyped sample is its own family.
      family(name, where)
    }
    const series = `${name}${JSON.stringify(Object.entries(labels).sort())}`
    if (seenSeries.has(series)) throw new Error(`${where}: duplicate series`)
    seenSeries.add(series)
    current!.samples.push({ name, labels, value })
  })
  for (const f of families.values()) if (f.type === "histogram") checkHistogram(f)
  return families
}

const checkHistogram = (f: Family) => {
  const groups = new Map<string, Array<Sample>>()
  for (const s of f.samples) {
    const { le, ...rest } = s.labels
    const key = JSON.stringify(Object.entries(rest).sort())
    groups.set(key, [...(groups.get(key) ?? []), s])
  }
  for (const [key, samples] of groups) {
    const buckets = samples.filter((s) => s.name.endsWith("_bucket"))
    const count = samples.find((s) => s.name.endsWith("_count"))
    if (count === undefined || samples.find((s) => s.name.endsWith("_sum")) === undefined) {
      throw new Error(`${f.name}${key}: histogram without _sum or _count`)
    }
    let previous = -Infinity
    let last = -1
    for (const b of buckets) {
      const le = b.labels.le
      if (le === undefined) throw new Error(`${f.name}${key}: bucket without le`)
      const bound = parseValue(le, f.name)
      if (bound <= previous) throw new Error(`${f.name}${key}: buckets not in increasing le`)
      if (b.value < last) throw new Error(`${f.name}${key}: buckets not cumulative`)
      previous = bound
      last = b.value
    }
    if (previous !== Infinity || last !== count.value) throw new Error(`${f.name}${key}: le="+Inf" missing or not _count`)
  }
}

/** The value of one series, or undefined. */
export const valueOf = (families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined => {
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (s.name !== name) continue
      const keys = Object.keys(s.labels)
      if (keys.length === Object.keys(labels).length && keys.every((k) => s.labels[k] === labels[k])) return s.value
    }
  }
  return undefined
}
