import { and, eq, isNull, sql } from 'drizzle-orm'
import type { Database } from '../../db/client'
import { workerJobs } from '../../db/schema'
import { insertJobs, lockTags } from './insert'
import type { NewJobRow } from './successor'

/**
 * Ensures exactly one pending row for a built-in cron job (its tag is the job type). Safe when several
 * servers boot at once: the tag's advisory lock serialises them, and the second sees the first's row.
 * A pending row whose schedule differs from the configured one is moved to the new schedule.
 * Returns what it did, for the boot log.
 */
export async function seedCronJob(db: Database, row: NewJobRow & { tag: string; cronSchedule: string }) {
  return db.transaction(async (tx) => {
    await lockTags(tx, [row.tag])
    const [existing] = await tx
      .select({ id: workerJobs.id, cronSchedule: workerJobs.cronSchedule })
      .from(workerJobs)
      .where(and(eq(workerJobs.tag, row.tag), isNull(workerJobs.started), isNull(workerJobs.finished)))
    if (existing) {
      if (existing.cronSchedule === row.cronSchedule) return { action: 'kept' as const, id: existing.id }
      await tx
        .update(workerJobs)
        .set({ cronSchedule: row.cronSchedule, due: row.due, updatedAt: sql`now()` })
        .where(eq(workerJobs.id, existing.id))
      return { action: 'rescheduled' as const, id: existing.id }
    }
    const [inserted] = await insertJobs(tx, [row], { onTagConflict: 'skip' })
    return { action: 'inserted' as const, id: inserted?.id }
  })
}
