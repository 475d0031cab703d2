import { type SQL, sql } from 'drizzle-orm'

/**
 * A text[] value bound as one parameter. drizzle's `sql` expands a JS array into a list `($1, $2, …)`,
 * which is a syntax error when empty and a new statement text for every length (defeating prepared
 * statements), so the array travels as one JSON parameter instead.
 */
export function textArray(values: readonly string[]): SQL {
  return jsonTextArray(JSON.stringify(values))
}

/** textArray from the array's JSON text (a value or a placeholder of a compiled statement). */
export function jsonTextArray(json: unknown): SQL {
  return sql`ARRAY(SELECT jsonb_array_elements_text(${json}::jsonb))`
}

/** A bigint[] value bound as one parameter, for `id = ANY(…)`. */
export function bigintArray(values: readonly number[]): SQL {
  return jsonBigintArray(JSON.stringify(values))
}

/** bigintArray from the array's JSON text (a value or a placeholder of a compiled statement). */
export function jsonBigintArray(json: unknown): SQL {
  return sql`ARRAY(SELECT jsonb_array_elements_text(${json}::jsonb)::bigint)`
}
