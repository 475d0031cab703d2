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
