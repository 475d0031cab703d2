/** JSON for a jsonb parameter: bigints (block numbers, wei) become decimal strings instead of throwing. */
export function toJson(value: unknown): string {
  return JSON.stringify(value ?? null, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))
}
