import type { WorkerJob } from '../../db/schema'
import { nextCronRun } from '../cron'
import { retryDelaySeconds } from './backoff'

export type NewJobRow = Omit<
  WorkerJob,
  'id' | 'started' | 'finished' | 'removeAt' | 'success' | 'result' | 'lockedBy' | 'lastError' | 'leaseExpiresAt' | 'cancelledAt' | 'createdAt' | 'updatedAt'
>

/** The fields successorOf reads: a claimed row, or one the rescuer read back. */
export type FinishedJob = Pick<
  WorkerJob,
  | 'id'
  | 'type'
  | 'userId'
  | 'data'
  | 'priority'
  | 'concurrencyKey'
  | 'cronSchedule'
  | 'autoRescheduleOnFailure'
  | 'autoRescheduleOnFailureDelay'
  | 'removeDelay'
  | 'persistent'
  | 'tag'
  | 'attempt'
  | 'maxAttempts'
>

/**
 * The row that follows a finished job, or null when nothing follows. Pure, so the rules are tested with a
 * fixed clock:
 * - a failed job with autoRescheduleOnFailure is retried after retryDelaySeconds (never sooner than 1 s,
 *   exponential backoff when no delay was given), attempt + 1, unless maxAttempts is reached;
 * - a cron job always gets a successor: the retry above if it applies, otherwise its next cron time with
 *   attempt reset to 1. A cron job never stops recurring because a run failed.
 * Every option, persistent included, is carried over. Throws CronError for a cron string with no next run
 * (only a row written by hand can hold one); planFinish turns that into the job's error.
 */
export function successorOf(job: FinishedJob, success: boolean, now: Date, random: () => number = Math.random): NewJobRow | null {
  const base = {
    type: job.type,
    userId: job.userId,
    data: job.data,
    priority: job.priority,
    concurrencyKey: job.concurrencyKey,
    cronSchedule: job.cronSchedule,
    autoRescheduleOnFailure: job.autoRescheduleOnFailure,
    autoRescheduleOnFailureDelay: job.autoRescheduleOnFailureDelay,
    removeDelay: job.removeDelay,
    persistent: job.persistent,
    tag: job.tag,
    maxAttempts: job.maxAttempts,
    rescheduledFromJob: job.id,
  }
  const mayRetry = !success && job.autoRescheduleOnFailure && job.attempt < job.maxAttempts
  if (mayRetry) {
    const delayMs = retryDelaySeconds(job.attempt, job.autoRescheduleOnFailureDelay, random) * 1000
    return { ...base, due: new Date(now.getTime() + delayMs), attempt: job.attempt + 1 }
  }
  if (job.cronSchedule) {
    return { ...base, due: nextCronRun(job.cronSchedule, now), attempt: 1 }
  }
  return null
}

/** Whether a finished job may need a successor row (decides if its finish needs a transaction). */
export function mayHaveSuccessor(job: FinishedJob, success: boolean): boolean {
  return job.cronSchedule !== null || (!success && job.autoRescheduleOnFailure)
}

/**
 * What finishing a job writes: its outcome and its successor. Never throws: a successor that cannot be
 * computed (a cron string with no next run, written by hand) fails the job with an error that says so,
 * and no successor is written, instead of failing the statement that records the whole batch.
 */
export function planFinish(
  job: FinishedJob,
  success: boolean,
  result: unknown,
  now: Date,
): { success: boolean; result: unknown; successor: NewJobRow | null } {
  try {
    return { success, result, successor: successorOf(job, success, now) }
  } catch (err) {
    const error = `cron_schedule: ${err instanceof Error ? err.message : String(err)}; no further runs are scheduled`
    const previous = success ? undefined : (result as { error?: unknown } | null)?.error
    return { success: false, result: previous === undefined ? { error } : { error, jobError: previous }, successor: null }
  }
}
