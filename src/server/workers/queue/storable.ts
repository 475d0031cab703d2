import { toJson } from './rows'

/** A result or error larger than this is replaced by a preview: one handler must not bloat every read of the table. */
export const MAX_RESULT_CHARS = 256 * 1024
const PREVIEW_CHARS = 2_000

/**
 * JSON.stringify writes a NUL as \u0000 and a lone surrogate as \udXXX; jsonb refuses both, and one such
 * row used to abort the statement recording a whole batch. Valid surrogate pairs come out as the
 * characters themselves, so this only matches the two bad cases (or a literal backslash-u text, which the
 * exact sanitizer below then leaves as it is).
 */
const SUSPECT = /\\u0000|\\ud[89a-f]/i

/**
 * The JSON text of a handler's result or error, made storable in a jsonb column before it is written:
 * NULs and lone surrogates replaced, bigints as strings, cycles cut, and at most MAX_RESULT_CHARS long.
 * Never throws. The fast path is one JSON.stringify; the exact walk runs only when the text looks suspect.
 */
export function storableJson(value: unknown): string {
  let json: string
  try {
    json = toJson(value)
    if (SUSPECT.test(json)) json = JSON.stringify(sanitizeForJsonb(value)) ?? 'null'
  } catch {
    json = JSON.stringify(sanitizeForJsonb(value)) ?? 'null'
  }
  if (json.length <= MAX_RESULT_CHARS) return json
  return JSON.stringify(sanitizeForJsonb({ truncated: true, chars: json.length, preview: json.slice(0, PREVIEW_CHARS) }))
}

/** NUL, and UTF-16 surrogates that are not part of a pair: the characters jsonb cannot hold. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is exactly the character this must find.
const UNSTORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g
const cleanString = (s: string) => s.replace(UNSTORABLE, '\ufffd')

/**
 * A copy of `value` that jsonb accepts, as JSON.stringify would see it: NUL and lone surrogates in
 * strings and keys become U+FFFD, bigints become decimal strings, a cycle becomes "[circular]", toJSON is
 * honoured, and undefined, functions and symbols are dropped (null inside arrays). Pure.
 */
export function sanitizeForJsonb(value: unknown, seen: Set<object> = new Set()): unknown {
  if (typeof value === 'string') return cleanString(value)
  if (typeof value === 'bigint') return value.toString()
  if (typeof value === 'number') return Number.isFinite(value) ? value : null
  if (value === null || typeof value === 'boolean') return value
  if (typeof value !== 'object') return undefined
  const json = (value as { toJSON?: () => unknown }).toJSON
  if (typeof json === 'function') return sanitizeForJsonb(json.call(value), seen)
  if (seen.has(value)) return '[circular]'
  seen.add(value)
  try {
    if (Array.isArray(value)) return value.map((v) => sanitizeForJsonb(v, seen) ?? null)
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value)) {
      const clean = sanitizeForJsonb(v, seen)
      if (clean !== undefined) out[cleanString(k)] = clean
    }
    return out
  } finally {
    seen.delete(value)
  }
}
