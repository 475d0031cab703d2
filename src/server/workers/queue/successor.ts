import type { WorkerJob } from '../../db/schema'
import { nextCronRun } from '../cron'

export type NewJobRow = Omit<
  WorkerJob,
  'id' | 'started' | 'finished' | 'removeAt' | 'success' | 'result' | 'lockedBy' | 'lastError' | 'leaseExpiresAt' | 'createdAt' | 'updatedAt'
>

/**
 * The row that follows a finished job, or null when nothing follows. Pure, so the rules are tested with a
 * fixed clock:
 * - a failed job with autoRescheduleOnFailure is retried at now + delay, attempt + 1, unless maxAttempts
 *   is reached;
 * - a cron job always gets a successor: the retry above if it applies, otherwise its next cron time with
 *   attempt reset to 1. A cron job never stops recurring because a run failed.
 * Every option, persistent included, is carried over.
 */
export function successorOf(job: WorkerJob, success: boolean, now: Date): NewJobRow | null {
  const base = {
    type: job.type,
    userId: job.userId,
    data: job.data,
    cronSchedule: job.cronSchedule,
    autoRescheduleOnFailure: job.autoRescheduleOnFailure,
    autoRescheduleOnFailureDelay: job.autoRescheduleOnFailureDelay,
    removeDelay: job.removeDelay,
    persistent: job.persistent,
    tag: job.tag,
    maxAttempts: job.maxAttempts,
    rescheduledFromJob: job.id,
  }
  const mayRetry =
    !success && job.autoRescheduleOnFailure && (job.maxAttempts === null || job.attempt < job.maxAttempts)
  if (mayRetry) {
    return { ...base, due: new Date(now.getTime() + job.autoRescheduleOnFailureDelay * 1000), attempt: job.attempt + 1 }
  }
  if (job.cronSchedule) {
    return { ...base, due: nextCronRun(job.cronSchedule, now), attempt: 1 }
  }
  return null
}

/** Whether a finished job may need a successor row (decides if its finish needs a transaction). */
export function mayHaveSuccessor(job: WorkerJob, success: boolean): boolean {
  return job.cronSchedule !== null || (!success && job.autoRescheduleOnFailure)
}
