import { type SQL, sql } from 'drizzle-orm'
import { type Database, type Executor, runQuery } from '../../db/client'
import type { WorkerJob } from '../../db/schema'
import { insertJobs, lockTags } from './insert'
import { notifyDue } from './notify'
import { heldBy } from './states'
import { storableJson } from './storable'
import { type NewJobRow, planFinish } from './successor'
import { isTransientDbError } from './transient'

/**
 * What running a job produced. An interruption (our own shutdown, a lost lease) is not the job's failure:
 * when `rerun` is set and attempts remain, the row goes back to pending instead of being finished.
 */
export interface Outcome {
  job: WorkerJob
  success: boolean
  result: unknown
  interrupted?: { reason: string; rerun: boolean }
}

/** Delay before an interrupted job runs again: no job is retried sooner than a second (see backoff.ts). */
const RERUN_DELAY_SECONDS = 1

/**
 * Records the outcomes of jobs this worker ran: one statement per kind for the whole batch.
 *
 * Ownership: a row is only written if it is still `locked_by` this worker and running, so a job that was
 * rescued (lease expired, child declared dead) is never overwritten by a late result. When any outcome
 * needs a successor (cron, retry), the writes and the successor inserts share one transaction, so a
 * finished cron job always has its next run.
 *
 * Poison: if the batch fails for a reason other than a lost connection, it is split in halves until the
 * row that cannot be written is alone; that row is then recorded as a failure naming the database's
 * error, and every other row finishes normally. A connection error is rethrown for the caller to retry
 * the whole batch (rows already written are skipped then by the ownership check).
 * Returns the ids actually written.
 */
export async function finishJobs(db: Database, workerId: string, outcomes: readonly Outcome[]): Promise<Set<number>> {
  if (outcomes.length === 0) return new Set()
  try {
    return await writeOutcomes(db, workerId, outcomes)
  } catch (err) {
    if (isTransientDbError(err)) throw err
    if (outcomes.length > 1) {
      const half = Math.ceil(outcomes.length / 2)
      const first = await finishJobs(db, workerId, outcomes.slice(0, half))
      const second = await finishJobs(db, workerId, outcomes.slice(half))
      return new Set([...first, ...second])
    }
    return writeUnstorable(db, workerId, outcomes[0]!, err)
  }
}

/** The one outcome that cannot be written as it is: recorded as a failure that says why. */
async function writeUnstorable(db: Database, workerId: string, o: Outcome, cause: unknown): Promise<Set<number>> {
  const reason = cause instanceof Error ? cause.message : String(cause)
  const failed: Outcome = { job: o.job, success: false, result: { error: `the outcome could not be stored: ${reason}` } }
  try {
    return await writeOutcomes(db, workerId, [failed])
  } catch (err) {
    if (isTransientDbError(err)) throw err
    // Even the plain failure (with its successor) was refused: finish the row without a successor.
    return writeOutcomes(db, workerId, [failed], { successors: false })
  }
}

async function writeOutcomes(
  db: Database,
  workerId: string,
  outcomes: readonly Outcome[],
  opts: { successors?: boolean } = {},
): Promise<Set<number>> {
  const now = new Date()
  const finishes: { id: number; success: boolean; json: string; successor: NewJobRow | null }[] = []
  const releases: { id: number; error: string }[] = []
  for (const o of outcomes) {
    if (o.interrupted?.rerun && o.job.attempt < o.job.maxAttempts) {
      releases.push({ id: o.job.id, error: o.interrupted.reason })
      continue
    }
    const plan = planFinish(o.job, o.success, o.result, now)
    finishes.push({ id: o.job.id, success: plan.success, json: storableJson(plan.result), successor: opts.successors === false ? null : plan.successor })
  }
  const write = async (tx: Executor) => {
    const done = await markFinished(tx, workerId, finishes)
    const released = await releaseJobs(tx, { workerId, jobs: releases })
    const next = finishes.filter((f) => f.successor && done.has(f.id)).map((f) => f.successor!)
    await insertSuccessors(tx, next)
    return new Set([...done, ...released])
  }
  const needsTransaction = finishes.some((f) => f.successor) || (finishes.length > 0 && releases.length > 0)
  return needsTransaction ? db.transaction(write) : write(db)
}

async function markFinished(db: Executor, workerId: string, rows: readonly { id: number; success: boolean; json: string }[]): Promise<Set<number>> {
  if (rows.length === 0) return new Set()
  // Built by hand around the results' JSON, which storableJson already produced: no second stringify.
  const batch = `[${rows.map((r) => `{"id":${r.id},"success":${r.success},"result":${r.json}}`).join(',')}]`
  const done = await runQuery(
    db,
    sql`
    UPDATE worker_jobs AS j
    SET finished = now(), success = v.success, result = v.result,
        remove_at = now() + make_interval(secs => j.remove_delay), updated_at = now()
    FROM jsonb_to_recordset(${batch}::text::jsonb) AS v(id bigint, success boolean, result jsonb)
    WHERE j.id = v.id AND ${heldBy(workerId, 'j')}
    RETURNING j.id`,
  )
  return new Set(done.map((r) => Number(r.id)))
}

/**
 * Puts running rows back to pending with attempt + 1 and the reason in last_error (at-least-once after an
 * interruption, as River and Oban do), and announces their due time like an insert does. `workerId`
 * limits it to rows that worker still holds; `where` (for the rescuer) picks rows by another rule.
 */
export async function releaseJobs(
  db: Executor,
  opts: { workerId: string; jobs: readonly { id: number; error: string }[] } | { where: SQL; error: string },
): Promise<Set<number>> {
  let rows: Record<string, unknown>[]
  if ('workerId' in opts) {
    if (opts.jobs.length === 0) return new Set()
    rows = await runQuery(
      db,
      sql`
      WITH released AS (
        UPDATE worker_jobs AS j
        SET started = NULL, locked_by = NULL, lease_expires_at = NULL, attempt = j.attempt + 1,
            due = now() + make_interval(secs => ${RERUN_DELAY_SECONDS}), last_error = v.error, updated_at = now()
        FROM jsonb_to_recordset(${JSON.stringify(opts.jobs)}::text::jsonb) AS v(id bigint, error text)
        WHERE j.id = v.id AND ${heldBy(opts.workerId, 'j')}
        RETURNING j.id, j.due
      )
      ${notifyDue(sql`released`)}`,
    )
  } else {
    rows = await runQuery(
      db,
      sql`
      WITH released AS (
        UPDATE worker_jobs
        SET started = NULL, locked_by = NULL, lease_expires_at = NULL, attempt = attempt + 1,
            due = now() + make_interval(secs => ${RERUN_DELAY_SECONDS}), last_error = ${opts.error}, updated_at = now()
        WHERE ${opts.where}
        RETURNING id, due
      )
      ${notifyDue(sql`released`)}`,
    )
  }
  return new Set(rows.map((r) => Number(r.id)))
}

/** Inserts cron successors and retries; a tag that already has a pending row keeps that row. */
export async function insertSuccessors(tx: Executor, rows: readonly NewJobRow[]): Promise<void> {
  if (rows.length === 0) return
  await lockTags(tx, rows)
  await insertJobs(tx, rows, { onTagConflict: 'skip' })
}
