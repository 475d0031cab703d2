import { and, eq, sql } from 'drizzle-orm'
import type { ChainSpec } from '../../chainConfig'
import type { Database, Executor } from '../../db/client'
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
  /** Appended to the tag: one schedule per chain (`system:watchChain:8453`). */
  tagSuffix?: string
}

/** A built-in job of one chain: the data naming it and the tag suffix that gives it its own schedule. */
export function chainJob(chain: ChainSpec): { data: { chainId?: number }; tagSuffix: string } {
  // The CHAIN_RPC_URL shorthand's jobs name no chain (the default one) and keep their plain tags.
  return chain.tagSuffix ? { data: { chainId: chain.id }, tagSuffix: chain.tagSuffix } : { data: {}, tagSuffix: '' }
}

/** Cancels the pending row holding a built-in tag (the schedule is no longer configured); returns its id. */
export async function retireBuiltInSchedule(db: Executor, tag: string, reason: string): Promise<number[]> {
  const rows = await db
    .update(workerJobs)
    .set(cancelledSet(`cancelled: ${reason}`))
    .where(and(eq(workerJobs.userId, 0), eq(workerJobs.tag, systemTag(tag)), PENDING))
    .returning({ id: workerJobs.id })
  return rows.map((r) => r.id)
}

/** A pending row finished as cancelled by the seeding, with `error` as its result. */
const cancelledSet = (error: string) => ({
  finished: sql`now()`,
  success: false,
  result: { error },
  removeAt: sql`now() + make_interval(secs => ${workerJobs.removeDelay})`,
  updatedAt: sql`now()`,
})

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
    tag: systemTag(job.type + (job.tagSuffix ?? '')),
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
        .set(cancelledSet(`cancelled: tag reserved for the built-in ${row.type} schedule`))
        .where(eq(workerJobs.id, existing.id))
    }
    const [inserted] = await insertJobs(tx, [row], { onTagConflict: 'skip' })
    return { action: 'inserted', id: inserted?.id, ...(existing ? { cancelledJobId: existing.id } : {}) }
  })
}
