import type { WorkerJob } from '../../db/schema'

type Raw = Record<string, unknown>

const date = (v: unknown): Date | null => (v === null || v === undefined ? null : v instanceof Date ? v : new Date(String(v)))
const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v))

/** Maps a raw `worker_jobs` row (snake_case, as `RETURNING *` gives it) to the drizzle row type. */
export function rowToJob(r: Raw): WorkerJob {
  return {
    id: Number(r.id),
    type: r.type as string,
    userId: Number(r.user_id),
    data: r.data,
    due: date(r.due)!,
    started: date(r.started),
    finished: date(r.finished),
    removeAt: date(r.remove_at),
    success: (r.success as boolean | null) ?? null,
    result: r.result ?? null,
    cronSchedule: (r.cron_schedule as string | null) ?? null,
    autoRescheduleOnFailure: r.auto_reschedule_on_failure as boolean,
    autoRescheduleOnFailureDelay: Number(r.auto_reschedule_on_failure_delay),
    removeDelay: Number(r.remove_delay),
    persistent: r.persistent as boolean,
    tag: (r.tag as string | null) ?? null,
    attempt: Number(r.attempt),
    maxAttempts: num(r.max_attempts),
    rescheduledFromJob: num(r.rescheduled_from_job),
    lockedBy: (r.locked_by as string | null) ?? null,
    leaseExpiresAt: date(r.lease_expires_at),
    createdAt: date(r.created_at)!,
    updatedAt: date(r.updated_at)!,
  }
}

/** JSON for a jsonb column: bigints (block numbers, wei) become decimal strings instead of throwing. */
export function toJson(value: unknown): string {
  return JSON.stringify(value ?? null, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))
}
