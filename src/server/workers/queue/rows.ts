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

/** The full row of a freshly inserted job: what was inserted plus the values only the database assigned. */
export function insertedRow(r: NewJobRow, id: number, createdAt: Date): WorkerJob {
  return {
    ...r,
    id,
    started: null,
    finished: null,
    removeAt: null,
    success: null,
    result: null,
    lockedBy: null,
    lastError: null,
    leaseExpiresAt: null,
    createdAt,
    updatedAt: createdAt,
  }
}
