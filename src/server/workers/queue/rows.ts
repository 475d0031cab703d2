import type { WorkerJob } from '../../db/schema'
import type { NewJobRow } from './successor'

/**
 * JSON for a json parameter. Bigints (block numbers, wei) become decimal strings instead of throwing;
 * the replacer only runs when needed, because a replacer makes every stringify several times slower.
 */
export function toJson(value: unknown): string {
  try {
    return JSON.stringify(value ?? null)
  } catch (err) {
    if (!(err instanceof TypeError)) throw err
    return JSON.stringify(value ?? null, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))
  }
}

/**
 * Whether Postgres can store `s` as text or inside jsonb: it refuses NUL (\u0000) in both, and jsonb
 * refuses the \udXXX escape JSON.stringify writes for a lone UTF-16 surrogate (in a text column the
 * driver would silently turn one into U+FFFD). Both checks are native and quick on ordinary strings.
 */
export function isStorableText(s: string): boolean {
  return !s.includes('\u0000') && s.isWellFormed()
}

const unstorableReason = (s: string) =>
  s.includes('\u0000') ? 'contains a NUL character (\\u0000), which Postgres cannot store' : 'contains a lone UTF-16 surrogate, which Postgres cannot store'

/** A JSON-path step: `.key` as zod names fields, `[i]` for array items, `["…"]` (escaped) for a key that is itself bad. */
const step = (path: string, key: string | number) =>
  typeof key === 'number' ? `${path}[${key}]` : !isStorableText(key) ? `${path}[${JSON.stringify(key)}]` : path ? `${path}.${key}` : key

/** Boxed primitives and toJSON, as JSON.stringify sees a value before writing it. */
function jsonView(value: object, key: string): unknown {
  if (value instanceof String || value instanceof Number || value instanceof Boolean) return value.valueOf()
  const toJSON = (value as { toJSON?: (key: string) => unknown }).toJSON
  return typeof toJSON === 'function' ? toJSON.call(value, key) : value
}

/**
 * Whether toJson(value) is certainly storable, decided without allocating (a bulk submit checks every
 * job's data, and the walk below cost more than validating the rest of a small job): plain objects and
 * arrays, at most 32 deep, whose strings and keys are all storable. false only means "not certain": a bad
 * string or key, a toJSON, a boxed primitive or class instance, or deep nesting that may be a cycle;
 * findUnstorable then walks the value properly to name the culprit.
 */
function isPlainStorable(value: unknown, depth: number): boolean {
  if (typeof value === 'string') return isStorableText(value)
  if (value === null || typeof value !== 'object') return true
  if (depth > 32 || typeof (value as { toJSON?: unknown }).toJSON === 'function') return false
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) if (!isPlainStorable(value[i], depth + 1)) return false
    return true
  }
  const proto = Object.getPrototypeOf(value)
  if (proto !== Object.prototype && proto !== null) return false
  for (const k of Object.keys(value)) {
    if (!isStorableText(k) || !isPlainStorable((value as Record<string, unknown>)[k], depth + 1)) return false
  }
  return true
}

/**
 * The first place in `value`, as toJson would write it, that a jsonb column refuses: a string or a key
 * with NUL or a lone surrogate, or a cycle (JSON.stringify throws on one). `path` names the value
 * (`data`, `jobs[3].data`); the result names the culprit (`jobs[3].data.items[2].name`) and says why.
 * null when toJson(value) is storable as it is. Pure.
 */
export function findUnstorable(value: unknown, path = ''): { path: string; reason: string } | null {
  if (isPlainStorable(value, 0)) return null
  const ancestors = new Set<object>()
  const walk = (value: unknown, path: string, key: string): { path: string; reason: string } | null => {
    if (typeof value === 'string') return isStorableText(value) ? null : { path, reason: unstorableReason(value) }
    if (value === null || typeof value !== 'object') return null
    const v = jsonView(value, key)
    if (v !== value) return walk(v, path, key)
    if (ancestors.has(value)) return { path, reason: 'is a circular reference, which JSON cannot hold' }
    ancestors.add(value)
    try {
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) {
          const bad = walk(value[i], step(path, i), String(i))
          if (bad) return bad
        }
        return null
      }
      for (const k of Object.keys(value)) {
        const item = (value as Record<string, unknown>)[k]
        // A key whose value JSON.stringify drops is never written.
        if (item === undefined || typeof item === 'function' || typeof item === 'symbol') continue
        if (!isStorableText(k)) return { path: step(path, k), reason: `key ${unstorableReason(k)}` }
        const bad = walk(item, step(path, k), k)
        if (bad) return bad
      }
      return null
    } finally {
      ancestors.delete(value)
    }
  }
  return walk(value, path, '')
}

/** NUL and lone surrogates become U+FFFD (toWellFormed does the surrogates). */
const cleanText = (s: string) => (isStorableText(s) ? s : s.replaceAll('\u0000', '\ufffd').toWellFormed())

/**
 * A copy of `value` that toJson writes and jsonb accepts, for values the server did not validate
 * (handler results, error messages): NUL and lone surrogates in strings and keys become U+FFFD, bigints
 * decimal strings, NaN and ±Infinity null, a cycle "[circular]"; toJSON and boxed primitives are honoured
 * and undefined, functions and symbols are dropped as JSON.stringify drops them (null inside an array,
 * undefined at the top level). Pure; never throws for plain data (a throwing toJSON still throws).
 */
export function sanitizeForJsonb(value: unknown): unknown {
  const ancestors = new Set<object>()
  const clean = (value: unknown, key: string): unknown => {
    if (typeof value === 'string') return cleanText(value)
    if (typeof value === 'bigint') return value.toString()
    if (typeof value === 'number') return Number.isFinite(value) ? value : null
    if (value === null || typeof value === 'boolean') return value
    if (typeof value !== 'object') return undefined
    const v = jsonView(value, key)
    if (v !== value) return clean(v, key)
    if (ancestors.has(value)) return '[circular]'
    ancestors.add(value)
    try {
      if (Array.isArray(value)) return value.map((item, i) => clean(item, String(i)) ?? null)
      const out: Record<string, unknown> = {}
      for (const k of Object.keys(value)) {
        const c = clean((value as Record<string, unknown>)[k], k)
        // defineProperty: a plain assignment to "__proto__" would set the prototype instead of a key.
        if (c !== undefined) Object.defineProperty(out, cleanText(k), { value: c, enumerable: true, writable: true, configurable: true })
      }
      return out
    } finally {
      ancestors.delete(value)
    }
  }
  return clean(value, '')
}

/** The full row of a freshly inserted job: what was inserted plus the values only the database assigned. */
export function insertedRow(r: NewJobRow, id: number, createdAt: Date): WorkerJob {
  return {
    ...r,
    id,
    started: null,
    finished: null,
    removeAt: null,
    success: null,
    cancelledAt: null,
    result: null,
    lockedBy: null,
    lastError: null,
    leaseExpiresAt: null,
    createdAt,
    updatedAt: createdAt,
  }
}
