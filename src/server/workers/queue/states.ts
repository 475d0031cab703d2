import { type SQL, sql } from 'drizzle-orm'
// Type-only: db/schema.ts imports the predicate texts below for its partial indexes.
import type { WorkerJob } from '../../db/schema'

/**
 * The one owner of the job states. A row's state is derived from its columns; every query in the project
 * uses these predicates instead of spelling the columns out, so a rule changes in one place:
 *   pending   started IS NULL AND finished IS NULL      (waiting for its due time or a worker)
 *   running   started IS NOT NULL AND finished IS NULL  (held by locked_by until lease_expires_at)
 *   finished  finished IS NOT NULL                      (success tells the outcome; cancelled_at marks a cancelled one)
 * The partial indexes in db/schema.ts use the same text.
 */
export type JobStatus = 'PENDING' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'CANCELLED'

/** Unqualified predicates, for statements whose FROM has one jobs table (claim, finish, rescue, filters). */
export const PENDING_TEXT = 'started IS NULL AND finished IS NULL'
export const RUNNING_TEXT = 'started IS NOT NULL AND finished IS NULL'
export const FINISHED_TEXT = 'finished IS NOT NULL'
/** A row of a signed-in user, not of the system (user 0): the predicate of the pending-by-user index. */
export const SIGNED_IN_USER_TEXT = 'user_id <> 0'
export const SIGNED_IN_USER = sql.raw(SIGNED_IN_USER_TEXT)
/**
 * Pending rows split between the two claim indexes: rows of types without a concurrency limit
 * (worker_jobs_claim_idx, the common claim) and rows of limited types, which carry concurrency_key
 * (worker_jobs_limited_idx, the limited claim in limits.ts).
 */
export const CLAIMABLE_TEXT = `${PENDING_TEXT} AND concurrency_key IS NULL`
export const LIMITED_PENDING_TEXT = `${PENDING_TEXT} AND concurrency_key IS NOT NULL`
/** The same as SQL fragments: partial index definitions and ON CONFLICT targets need the text verbatim. */
export const PENDING = sql.raw(PENDING_TEXT)
export const RUNNING = sql.raw(RUNNING_TEXT)
export const FINISHED = sql.raw(FINISHED_TEXT)

/**
 * "Running and held by this worker", for the statements that name their rows by id (finish, renew,
 * release). Written as `locked_by = … AND finished IS NULL` on purpose: only a claim sets locked_by, so
 * this is the running predicate for that worker; spelling out `started IS NOT NULL` as well makes the
 * planner pick the running-lease partial index (whose predicate it matches), scan every running row and
 * the index's dead entries on each call instead of looking the ids up by primary key: it halved the
 * throughput. `alias` qualifies the columns when the statement joins another relation.
 */
export function heldBy(workerId: string, alias?: string): SQL {
  const c = alias ? `${alias}.` : ''
  return sql`${sql.raw(c)}locked_by = ${workerId} AND ${sql.raw(c)}finished IS NULL`
}

/** The condition of each status, for single-table queries; GraphQL and /metrics share these. */
export const STATUS_WHERE: Record<JobStatus, SQL> = {
  PENDING,
  RUNNING,
  SUCCEEDED: sql.raw(`${FINISHED_TEXT} AND success IS TRUE AND cancelled_at IS NULL`),
  FAILED: sql.raw(`${FINISHED_TEXT} AND success IS NOT TRUE AND cancelled_at IS NULL`),
  // Cancelled by cancelJob or replaced by a newer job with its tag (success is false).
  CANCELLED: sql.raw(`${FINISHED_TEXT} AND cancelled_at IS NOT NULL`),
}

export function statusOf(job: Pick<WorkerJob, 'started' | 'finished' | 'success' | 'cancelledAt'>): JobStatus {
  if (job.finished) return job.cancelledAt ? 'CANCELLED' : job.success === true ? 'SUCCEEDED' : 'FAILED'
  return job.started ? 'RUNNING' : 'PENDING'
}
