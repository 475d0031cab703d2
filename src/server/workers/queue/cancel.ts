import { and, eq, type SQL, sql } from 'drizzle-orm'
import type { Database, Transaction } from '../../db/client'
import { type WorkerJob, workerJobs } from '../../db/schema'
import type { JobRegistry } from '../jobs/types'
import { CANCEL_CHANNEL } from './notify'
import { PENDING, RUNNING } from './states'
import { submitJob } from './submit'

/** Why cancelJob or rerunJob refused: the row is not there (or not the caller's), or not in a state for it. */
export type JobActionErrorCode = 'NOT_FOUND' | 'ALREADY_FINISHED' | 'NOT_FINISHED'

export class JobActionError extends Error {
  constructor(
    readonly code: JobActionErrorCode,
    message: string,
  ) {
    super(message)
    this.name = 'JobActionError'
  }
}

export interface CancelResult {
  job: WorkerJob
  /**
   * `cancelled`: it was pending and is now finished as cancelled (it never ran). `cancelling`: it is
   * running; its handler's signal is being aborted and the row will be recorded as cancelled when the
   * run ends (status stays RUNNING until then).
   */
  outcome: 'cancelled' | 'cancelling'
}

/** A row's state may change between our statements (claimed, finished, rescued); this many looks settle it. */
const MAX_TRIES = 5

const ownedBy = (id: number, ownerUserId: number | undefined): SQL =>
  ownerUserId === undefined ? eq(workerJobs.id, id) : and(eq(workerJobs.id, id), eq(workerJobs.userId, ownerUserId))!

const notFound = (id: number) => new JobActionError('NOT_FOUND', `job ${id} not found`)

/**
 * Cancels a job. `ownerUserId` set: only that user's row (any other is NOT_FOUND, so ids reveal nothing).
 * `by` (e.g. "user 7", "admin") is stored in the result as `cancelledBy`.
 *
 * - pending: one statement finishes it as cancelled (success false, result `{ error: 'cancelled',
 *   cancelledBy }`, remove_at from remove_delay). Nothing follows it: a cron job's schedule stops, no retry.
 * - running: cancelled_at is set (a request; it stays RUNNING) and `by` is kept in the running row's
 *   result, with a NOTIFY on CANCEL_CHANNEL in the same statement; the child holding it fires the
 *   handler's signal, and the finish path records it as cancelled with what the handler produced
 *   (queue/finish.ts). Idempotent: a second call answers 'cancelling' again and keeps the first `by`.
 * - finished: JobActionError ALREADY_FINISHED.
 */
export async function cancelJob(db: Database, id: number, opts: { ownerUserId?: number; by: string }): Promise<CancelResult> {
  const which = ownedBy(id, opts.ownerUserId)
  for (let i = 0; i < MAX_TRIES; i++) {
    // A claim holding the row makes this wait, then see it running (and match the next statement).
    const [cancelled] = await db
      .update(workerJobs)
      .set({
        finished: sql`now()`,
        cancelledAt: sql`now()`,
        success: false,
        result: sql`jsonb_build_object('error', 'cancelled', 'cancelledBy', ${opts.by}::text)`,
        removeAt: sql`now() + make_interval(secs => ${workerJobs.removeDelay})`,
        updatedAt: sql`now()`,
      })
      .where(and(which, PENDING))
      .returning()
    if (cancelled) return { job: cancelled, outcome: 'cancelled' }

    const requested = await requestCancel(db, which, opts.by)
    if (requested) return { job: requested, outcome: 'cancelling' }

    const [row] = await db.select({ finished: workerJobs.finished }).from(workerJobs).where(which)
    if (!row) throw notFound(id)
    if (row.finished) throw new JobActionError('ALREADY_FINISHED', `job ${id} has already finished`)
    // It changed state between the statements (a running row rescued back to pending): look again.
  }
  throw new Error(`job ${id} kept changing state; try again`)
}

/** Marks a running row as cancel-requested and notifies its holder, in one statement (one transaction). */
async function requestCancel(db: Database, which: SQL, by: string): Promise<WorkerJob | null> {
  return db.transaction(async (tx) => {
    const [job] = await tx
      .update(workerJobs)
      .set({
        cancelledAt: sql`coalesce(${workerJobs.cancelledAt}, now())`,
        // A running row has no result yet; this is where the finish statement finds who cancelled it.
        result: sql`coalesce(${workerJobs.result}, jsonb_build_object('cancelledBy', ${by}::text))`,
        updatedAt: sql`now()`,
      })
      .where(and(which, RUNNING))
      .returning()
    if (!job) return null
    await tx.execute(sql`SELECT pg_notify(${CANCEL_CHANNEL}, ${String(job.id)})`)
    return job
  })
}

/**
 * Runs a finished job again as a new one-off row, through the submit path: the data is validated against
 * the type's current schema and an unknown type is refused (JobInputError), exactly as for a submit. It
 * copies type, user, data, priority, remove_delay, persistent, max_attempts and the retry options, is due now with
 * attempt 1 and rescheduled_from_job = the old id. No cron_schedule and no tag: a rerun is a one-off (a
 * tag would cancel the pending successor of a schedule). `ownerUserId` set: only that user's row
 * (NOT_FOUND otherwise); a row not finished yet is NOT_FINISHED.
 */
export async function rerunJob(
  db: Database,
  registry: JobRegistry,
  id: number,
  opts: { ownerUserId?: number; tx?: Transaction } = {},
): Promise<WorkerJob> {
  const [old] = await (opts.tx ?? db).select().from(workerJobs).where(ownedBy(id, opts.ownerUserId))
  if (!old) throw notFound(id)
  if (!old.finished) throw new JobActionError('NOT_FINISHED', `job ${id} has not finished yet; only a finished job can be rerun`)
  return submitJob(
    db,
    registry,
    {
      type: old.type,
      userId: old.userId,
      data: old.data,
      due: new Date(),
      autoRescheduleOnFailure: old.autoRescheduleOnFailure,
      autoRescheduleOnFailureDelay: old.autoRescheduleOnFailureDelay,
      removeDelay: old.removeDelay,
      persistent: old.persistent,
      maxAttempts: old.maxAttempts,
      priority: old.priority,
    },
    { rescheduledFromJob: old.id, tx: opts.tx },
  )
}
