import { and, eq, sql } from 'drizzle-orm'
import type { Database } from '../../db/client'
import { workerJobs } from '../../db/schema'
import { nextCronRun } from '../cron'
import { insertJobs, lockTags } from './insert'
import { PENDING } from './states'
import { BUILT_IN_PRIORITY, DEFAULT_MAX_ATTEMPTS, DEFAULT_REMOVE_DELAY_SECONDS, systemTag } from './submit'
import type { NewJobRow } from './successor'

/** A built-in schedule: the manager seeds one per configured cron at boot. */
export interface BuiltInCron {
  type: string
  cronSchedule: string
  data?: unknown
}

export type SeedResult =
  | { action: 'kept' | 'rescheduled'; id: number }
  | { action: 'inserted'; id: number | undefined; cancelledJobId?: number }

/**
 * Ensures exactly one pending row for a built-in cron job: user 0, tag `system:<type>` (a prefix
 * submitJob refuses, so only seeding and the schedule's own successors hold it), of that type. Safe when
 * several servers boot at once: the tag's advisory lock serialises them, and the second sees the first's
 * row. A pending row whose schedule differs from the configured one is moved to the new schedule. A
 * pending row holding the tag with another type (old data, psql) is cancelled and the real one inserted.
 * Returns what it did, for the boot log.
 */
export async function seedCronJob(db: Database, job: BuiltInCron, now = new Date()): Promise<SeedResult> {
  const row: NewJobRow = {
    type: job.type,
    userId: 0,
    data: job.data ?? {},
    due: nextCronRun(job.cronSchedule, now),
    priority: BUILT_IN_PRIORITY,
    // The built-in types have no concurrency limit (a seeded type's rows take the common claim).
    concurrencyKey: null,
    cronSchedule: job.cronSchedule,
    autoRescheduleOnFailure: false,
    autoRescheduleOnFailureDelay: 0,
    removeDelay: DEFAULT_REMOVE_DELAY_SECONDS,
    persistent: false,
    tag: systemTag(job.type),
    attempt: 1,
    maxAttempts: DEFAULT_MAX_ATTEMPTS,
    rescheduledFromJob: null,
  }
  return db.transaction(async (tx) => {
    await lockTags(tx, [row])
    // At most one row: the pending-tag unique index is on (user_id, tag).
    const [existing] = await tx
      .select({ id: workerJobs.id, type: workerJobs.type, cronSchedule: workerJobs.cronSchedule })
      .from(workerJobs)
      .where(and(eq(workerJobs.userId, 0), eq(workerJobs.tag, row.tag!), PENDING))
    if (existing?.type === row.type) {
      if (existing.cronSchedule === row.cronSchedule) return { action: 'kept', id: existing.id }
      await tx
        .update(workerJobs)
        .set({ cronSchedule: row.cronSchedule, due: row.due, updatedAt: sql`now()` })
        .where(eq(workerJobs.id, existing.id))
      return { action: 'rescheduled', id: existing.id }
    }
    if (existing) {
      await tx
        .update(workerJobs)
        .set({
          finished: sql`now()`,
          success: false,
          result: { error: `cancelled: tag reserved for the built-in ${row.type} schedule` },
          removeAt: sql`now() + make_interval(secs => ${workerJobs.removeDelay})`,
          updatedAt: sql`now()`,
        })
        .where(eq(workerJobs.id, existing.id))
    }
    const [inserted] = await insertJobs(tx, [row], { onTagConflict: 'skip' })
    return { action: 'inserted', id: inserted?.id, ...(existing ? { cancelledJobId: existing.id } : {}) }
  })
}
