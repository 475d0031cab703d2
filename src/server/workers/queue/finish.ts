import { and, inArray, isNotNull, isNull, lt, sql } from 'drizzle-orm'
import { type Database, type Executor, runQuery } from '../../db/client'
import { type WorkerJob, workerJobs } from '../../db/schema'
import { insertJobs, lockTags } from './insert'
import { toJson } from './rows'
import { mayHaveSuccessor, type NewJobRow, successorOf } from './successor'

export interface Outcome {
  job: WorkerJob
  success: boolean
  result: unknown
}

/**
 * Records the outcomes of jobs this worker ran, as one statement for the whole batch.
 *
 * Ownership: a row is only finished if it is still `locked_by` this worker and not yet finished, so a
 * job that was rescued (lease expired, child declared dead) is never overwritten by a late result.
 * When any outcome may need a successor (cron, retry), the update and the successor inserts share one
 * transaction, so a finished cron job always has its next run. Returns the ids actually finished.
 */
export async function finishJobs(db: Database, workerId: string, outcomes: readonly Outcome[]): Promise<Set<number>> {
  if (outcomes.length === 0) return new Set()
  const needsSuccessor = outcomes.some((o) => mayHaveSuccessor(o.job, o.success))
  if (!needsSuccessor) return markFinished(db, workerId, outcomes)
  return db.transaction(async (tx) => {
    const finished = await markFinished(tx, workerId, outcomes)
    const now = new Date()
    const next: NewJobRow[] = []
    for (const o of outcomes) {
      if (!finished.has(o.job.id)) continue
      const s = successorOf(o.job, o.success, now)
      if (s) next.push(s)
    }
    await insertSuccessors(tx, next)
    return finished
  })
}

async function markFinished(db: Executor, workerId: string, outcomes: readonly Outcome[]): Promise<Set<number>> {
  const batch = outcomes.map((o) => ({ id: o.job.id, success: o.success, result: o.result ?? null }))
  const rows = await runQuery(
    db,
    sql`
    UPDATE worker_jobs AS j
    SET finished = now(), success = v.success, result = v.result,
        remove_at = now() + make_interval(secs => j.remove_delay), updated_at = now()
    FROM jsonb_to_recordset(${toJson(batch)}::text::jsonb) AS v(id bigint, success boolean, result jsonb)
    WHERE j.id = v.id AND j.locked_by = ${workerId} AND j.finished IS NULL
    RETURNING j.id`,
  )
  return new Set(rows.map((r) => Number(r.id)))
}

/** Inserts cron successors and retries; a tag that already has a pending row keeps that row. */
export async function insertSuccessors(tx: Executor, rows: readonly NewJobRow[]): Promise<void> {
  if (rows.length === 0) return
  await lockTags(
    tx,
    rows.map((r) => r.tag),
  )
  await insertJobs(tx, rows, { onTagConflict: 'skip' })
}

/**
 * Fails running jobs that no live worker holds any more (their child exited, or their lease expired),
 * and applies the same retry and cron rules as a normal failure, in one transaction.
 */
export async function failAbandonedJobs(
  db: Database,
  which: { workerIds: readonly string[] } | { leaseExpired: true },
  error: string,
): Promise<WorkerJob[]> {
  const running = and(isNotNull(workerJobs.started), isNull(workerJobs.finished))
  const where =
    'workerIds' in which
      ? which.workerIds.length === 0
        ? undefined
        : and(running, inArray(workerJobs.lockedBy, [...which.workerIds]))
      : and(running, lt(workerJobs.leaseExpiresAt, sql`now()`))
  if (!where) return []
  return db.transaction(async (tx) => {
    const failed = await tx
      .update(workerJobs)
      .set({
        finished: sql`now()`,
        success: false,
        result: { error },
        removeAt: sql`now() + make_interval(secs => ${workerJobs.removeDelay})`,
        updatedAt: sql`now()`,
      })
      .where(where)
      .returning()
    const now = new Date()
    await insertSuccessors(
      tx,
      failed.map((j) => successorOf(j, false, now)).filter((s): s is NewJobRow => s !== null),
    )
    return failed
  })
}
