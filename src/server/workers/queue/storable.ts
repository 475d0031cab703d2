import { sanitizeForJsonb, toJson } from './rows'

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
    if (SUSPECT.test(json)) json = exact(value)
  } catch {
    try {
      json = exact(value)
    } catch (err) {
      // A toJSON that throws: say so instead of losing the outcome.
      json = exact({ unserializable: err instanceof Error ? err.message : String(err) })
    }
  }
  if (json.length <= MAX_RESULT_CHARS) return json
  return JSON.stringify(sanitizeForJsonb({ truncated: true, chars: json.length, preview: json.slice(0, PREVIEW_CHARS) }))
}

const exact = (value: unknown): string => JSON.stringify(sanitizeForJsonb(value)) ?? 'null'
