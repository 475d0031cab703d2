import { type SQL, sql } from 'drizzle-orm'
import { compileQuery, type Database, type Executor, runQuery } from '../../db/client'
import type { WorkerJob } from '../../db/schema'
import type { RecordedOutcome } from '../jobMetrics'
import { insertJobs, lockTags } from './insert'
import { notifyDue } from './notify'
import { bigintArray, jsonBigintArray } from './params'
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
  /** How long the handler ran, in ms (for the run time histogram). */
  runMs?: number
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
 * Cancellation: a row whose cancelled_at is set (cancelJob asked it to stop while it ran) is recorded as
 * cancelled whatever the handler did: success = false, result `{ error: 'cancelled', cancelledBy?, outcome }`
 * with the handler's own result or error in `outcome`, and no successor (no retry, no cron run). The
 * statements read cancelled_at from the row they update, under its lock, so this costs no extra query.
 *
 * Poison: if the batch fails for a reason other than a lost connection, it is split in halves until the
 * row that cannot be written is alone; that row is then recorded as a failure naming the database's
 * error, and every other row finishes normally. A connection error is rethrown for the caller to retry
 * the whole batch (rows already written are skipped then by the ownership check).
 * Returns the ids actually written, each with what its row became (the metrics count these, so a row
 * rescued meanwhile, which is not written, is never counted as this worker's outcome).
 */
export async function finishJobs(db: Database, workerId: string, outcomes: readonly Outcome[]): Promise<Written> {
  if (outcomes.length === 0) return new Map()
  try {
    return await writeOutcomes(db, workerId, outcomes)
  } catch (err) {
    if (isTransientDbError(err)) throw err
    if (outcomes.length > 1) {
      const half = Math.ceil(outcomes.length / 2)
      const first = await finishJobs(db, workerId, outcomes.slice(0, half))
      const second = await finishJobs(db, workerId, outcomes.slice(half))
      return new Map([...first, ...second])
    }
    return writeUnstorable(db, workerId, outcomes[0]!, err)
  }
}

/** The one outcome that cannot be written as it is: recorded as a failure that says why. */
async function writeUnstorable(db: Database, workerId: string, o: Outcome, cause: unknown): Promise<Written> {
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
): Promise<Written> {
  const now = new Date()
  const finishes: { id: number; success: boolean; json: string; successor: NewJobRow | null }[] = []
  const releases: { id: number; error: string; json: string }[] = []
  for (const o of outcomes) {
    if (o.interrupted?.rerun && o.job.attempt < o.job.maxAttempts) {
      releases.push({ id: o.job.id, error: o.interrupted.reason, json: storableJson(o.result) })
      continue
    }
    const plan = planFinish(o.job, o.success, o.result, now)
    finishes.push({ id: o.job.id, success: plan.success, json: storableJson(plan.result), successor: opts.successors === false ? null : plan.successor })
  }
  const withSuccessors = finishes.some((f) => f.successor)
  const write = async (tx: Executor) => {
    const done = await markFinished(tx, workerId, finishes)
    const released = await releaseJobs(tx, { workerId, jobs: releases })
    // A cancelled row gets no successor: its lock (taken by the UPDATE above) keeps cancelled_at as read.
    const next = finishes.filter((f) => f.successor && done.get(f.id) === false).map((f) => f.successor!)
    await insertSuccessors(tx, next)
    const written = recordedAs(finishes, done)
    for (const id of released.ids) written.set(id, released.cancelled.has(id) ? 'cancelled' : 'interrupted')
    return written
  }
  const needsTransaction = withSuccessors || (finishes.length > 0 && releases.length > 0)
  return needsTransaction ? db.transaction(write) : write(db)
}

/** The rows a finish wrote, each with what it became. */
export type Written = Map<number, RecordedOutcome>

/** What each finished row became, from the finish statement's `done` (id -> cancelled). */
function recordedAs(finishes: readonly { id: number; success: boolean }[], done: Map<number, boolean>): Written {
  const written: Written = new Map()
  for (const f of finishes) {
    const cancelled = done.get(f.id)
    if (cancelled !== undefined) written.set(f.id, cancelled ? 'cancelled' : f.success ? 'succeeded' : 'failed')
  }
  return written
}

/**
 * The finish of `outcomes` as one statement, for a caller that sends it inside a transaction of its own
 * (the hand-off of a concurrency slot, queue/handoff.ts), with how to read what it wrote; null when any
 * outcome needs more than a finish (a rerun, a retry or a cron successor): finishJobs records those.
 */
export function plainFinish(
  workerId: string,
  outcomes: readonly Outcome[],
): { statement: SQL; written: (rows: readonly Record<string, unknown>[]) => Written } | null {
  const now = new Date()
  const finishes: { id: number; success: boolean; json: string }[] = []
  for (const o of outcomes) {
    if (o.interrupted?.rerun && o.job.attempt < o.job.maxAttempts) return null
    const plan = planFinish(o.job, o.success, o.result, now)
    if (plan.successor) return null
    finishes.push({ id: o.job.id, success: plan.success, json: storableJson(plan.result) })
  }
  return { statement: finishSql(finishValues(workerId, finishes)), written: (rows) => recordedAs(finishes, doneOf(rows)) }
}

/**
 * Finishes the rows this worker still holds; returns the ids written, each mapped to whether its row was
 * cancelled (the successors and the run metrics both need to know).
 */
async function markFinished(
  db: Executor,
  workerId: string,
  rows: readonly { id: number; success: boolean; json: string }[],
): Promise<Map<number, boolean>> {
  if (rows.length === 0) return new Map()
  return doneOf(await compiledFinish(db, finishValues(workerId, rows)))
}

/** The finish statement's values for `rows`. */
function finishValues(workerId: string, rows: readonly { id: number; success: boolean; json: string }[]) {
  // Built by hand around the results' JSON, which storableJson already produced: no second stringify.
  const batch = `[${rows.map((r) => `{"id":${r.id},"success":${r.success},"result":${r.json}}`).join(',')}]`
  const ids = `[${rows.map((r) => r.id).join(',')}]`
  return { workerId, batch, ids }
}

const doneOf = (rows: readonly Record<string, unknown>[]) => new Map(rows.map((r) => [Number(r.id), r.cancelled === true]))

/**
 * `ran`: whether the row was running (a row requeued by hand keeps locked_by, and is finished too; the
 * hand-off counts only running rows as slots it frees, handoff.ts).
 *
 * The rows are found by `id = ANY(ARRAY(…ids…))`, a primary-key lookup whatever the statistics say, as in
 * the claim. Joined only to the recordset (which the planner always guesses at 100 rows), the held-by
 * filter looked selective enough that on a table of a few thousand rows the planner hashed the batch
 * and read the whole table for every finish (a sequential scan per job in the latency benchmark, 0.5 ms
 * each at 1,200 rows; tests/workers/finishPlan.test.ts saw it at 5,000 rows too, not at 50,000).
 */
function finishSql({ workerId, batch, ids }: { workerId: string; batch: string; ids: string }): SQL {
  return sql`
    UPDATE worker_jobs AS j
    SET finished = now(), success = v.success AND j.cancelled_at IS NULL,
        result = CASE WHEN j.cancelled_at IS NULL THEN v.result ELSE ${cancelledResult(sql`v.result`)} END,
        remove_at = now() + make_interval(secs => j.remove_delay), updated_at = now()
    FROM jsonb_to_recordset(${batch}::text::jsonb) AS v(id bigint, success boolean, result jsonb)
    WHERE j.id = ANY(${jsonBigintArray(ids)}) AND j.id = v.id AND ${heldBy(workerId, 'j')}
    RETURNING j.id, j.cancelled_at IS NOT NULL AS cancelled, j.type, j.started IS NOT NULL AS ran`
}

/** Rendered once: a worker writes one finish per batch of jobs (see compileQuery). */
const compiledFinish = compileQuery(finishSql)

/**
 * The result of a cancelled row that ran (or was interrupted): `{ error: 'cancelled', cancelledBy?, outcome }`.
 * `outcome` is what the run produced, so nothing that happened is hidden; `cancelledBy` is the label
 * cancelJob left in the running row's result (absent when cancelled_at was set by hand). Only for
 * statements that update worker_jobs AS j, where j.result is still the running row's.
 */
export function cancelledResult(outcome: SQL): SQL {
  return sql`jsonb_build_object('error', 'cancelled', 'outcome', ${outcome})
    || CASE WHEN j.result->'cancelledBy' IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('cancelledBy', j.result->'cancelledBy') END`
}

/**
 * Puts running rows back to pending with attempt + 1 and the reason in last_error (at-least-once after an
 * interruption, as River and Oban do), and announces their due time like an insert does. `workerId`
 * limits it to rows that worker still holds; `where` (for the rescuer) picks rows by another rule.
 *
 * A row whose cancel was requested (cancelled_at set) never goes back to pending: the same statement
 * finishes it as cancelled instead (attempt unchanged, no successor), with the interruption as its
 * outcome. One UPDATE decides per row under its lock, so a cancel that commits meanwhile is never missed.
 * Returns every id written (`ids`) and, among them, those finished as cancelled.
 */
export async function releaseJobs(
  db: Executor,
  opts: { workerId: string; jobs: readonly { id: number; error: string; json?: string }[] } | { where: SQL; error: string },
): Promise<{ ids: Set<number>; cancelled: Set<number> }> {
  let rows: Record<string, unknown>[]
  if ('workerId' in opts) {
    if (opts.jobs.length === 0) return { ids: new Set(), cancelled: new Set() }
    const batch = `[${opts.jobs.map((r) => `{"id":${r.id},"error":${JSON.stringify(r.error)},"result":${r.json ?? JSON.stringify({ error: r.error })}}`).join(',')}]`
    // By primary key, whatever the statistics say (see finishSql).
    const ids = bigintArray(opts.jobs.map((r) => r.id))
    rows = await runQuery(
      db,
      sql`
      WITH released AS (
        UPDATE worker_jobs AS j
        SET ${releaseOrCancel(sql`v.error`, sql`v.result`)}
        FROM jsonb_to_recordset(${batch}::text::jsonb) AS v(id bigint, error text, result jsonb)
        WHERE j.id = ANY(${ids}) AND j.id = v.id AND ${heldBy(opts.workerId, 'j')}
        RETURNING j.id, CASE WHEN j.finished IS NULL THEN j.due END AS due
      )
      ${notifyDue(sql`released`)}`,
    )
  } else {
    rows = await runQuery(
      db,
      sql`
      WITH released AS (
        UPDATE worker_jobs AS j
        SET ${releaseOrCancel(sql`${opts.error}::text`, sql`jsonb_build_object('error', ${opts.error}::text)`)}
        WHERE ${opts.where}
        RETURNING j.id, CASE WHEN j.finished IS NULL THEN j.due END AS due
      )
      ${notifyDue(sql`released`)}`,
    )
  }
  const ids = new Set<number>()
  const cancelled = new Set<number>()
  for (const r of rows) {
    ids.add(Number(r.id))
    if (r.finished === true) cancelled.add(Number(r.id))
  }
  return { ids, cancelled }
}

/**
 * The SET list of releaseJobs for `worker_jobs AS j`: back to pending, or, for a row with cancelled_at,
 * finished as cancelled. Every expression reads the old row (Postgres evaluates SET against it).
 */
function releaseOrCancel(error: SQL, outcome: SQL): SQL {
  const live = sql.raw('j.cancelled_at IS NULL')
  return sql`started = CASE WHEN ${live} THEN NULL ELSE j.started END,
    locked_by = CASE WHEN ${live} THEN NULL ELSE j.locked_by END,
    lease_expires_at = NULL,
    attempt = CASE WHEN ${live} THEN j.attempt + 1 ELSE j.attempt END,
    due = CASE WHEN ${live} THEN now() + make_interval(secs => ${RERUN_DELAY_SECONDS}) ELSE j.due END,
    last_error = CASE WHEN ${live} THEN ${error} ELSE j.last_error END,
    finished = CASE WHEN ${live} THEN NULL ELSE now() END,
    success = CASE WHEN ${live} THEN j.success ELSE false END,
    result = CASE WHEN ${live} THEN j.result ELSE ${cancelledResult(outcome)} END,
    remove_at = CASE WHEN ${live} THEN j.remove_at ELSE now() + make_interval(secs => j.remove_delay) END,
    updated_at = now()`
}

/** Inserts cron successors and retries; a tag that already has a pending row keeps that row. */
export async function insertSuccessors(tx: Executor, rows: readonly NewJobRow[]): Promise<void> {
  if (rows.length === 0) return
  await lockTags(tx, rows)
  await insertJobs(tx, rows, { onTagConflict: 'skip' })
}
