import { type SQL, sql } from 'drizzle-orm'
import { type Database, runQuery } from '../../db/client'
import type { JobRegistry } from '../jobs/types'
import { cancelledResult, insertSuccessors, releaseJobs } from './finish'
import { announceFreedSlots } from './limits'
import { bigintArray, textArray } from './params'
import { RUNNING } from './states'
import { storableJson } from './storable'
import { type FinishedJob, planFinish } from './successor'
import { isTransientDbError } from './transient'

/** Which running rows to rescue: those a dead child held, or those whose lease has expired. */
export type RescueTarget = { workerIds: readonly string[] } | { leaseExpired: true }

export interface RescueResult {
  /** Back to pending with attempt + 1: they will run again. */
  released: number[]
  /** Finished as failed (attempts used up, or their type must never re-run blindly), with the usual retry and cron rules. */
  failed: number[]
  /** Their cancel had been requested (cancelled_at): finished as cancelled, never run again, no successor. */
  cancelled: number[]
  /** The type of every row above (for the metrics' `type` label). */
  typeOf: Map<number, string>
}

/** Rows handled per call; a larger backlog is taken on the next tick. */
const BATCH = 1_000

/**
 * The rescuer: the one place that decides what happens to a job whose run was interrupted by the
 * infrastructure (its child died, its server went silent, its lease expired). That is not the job's own
 * failure, so:
 *   - attempts left and the type allows it (defineJob's `rerunOnInterrupt`, default true): back to
 *     pending, attempt + 1, `last_error` says why (at-least-once);
 *   - otherwise: finished as failed with that reason, and the normal retry / cron rules apply;
 *   - whatever the above says, a row whose cancel was requested (cancelled_at) is finished as cancelled,
 *     with the reason as its outcome and no successor: a cancelled job is never run again.
 * The first (cancelled rows included: releaseJobs finishes those) is one statement that cannot fail on a row's content. The second goes row by row, each in its
 * own transaction, so a row that cannot be finished (a cron string with no next run, written by hand) is
 * failed alone without a successor and never blocks the rows after it.
 *
 * Safety: a dead child runs nothing; a live but silent holder has aborted its jobs before its lease ran
 * out (the worker loop's deadline), so rescuing after expiry never runs a job twice at once.
 */
export async function rescueJobs(db: Database, registry: JobRegistry, target: RescueTarget, reason: string): Promise<RescueResult> {
  const which = targetSql(target)
  if (!which) return { released: [], failed: [], cancelled: [], typeOf: new Map() }
  const noRerun = Object.values(registry)
    .filter((d) => d.rerunOnInterrupt === false)
    .map((d) => d.type)
  // Rows the single release statement handles: those that run again, and cancelled ones (finished there).
  const rerunnable = sql`(cancelled_at IS NOT NULL OR (attempt < max_attempts AND NOT (type = ANY(${textArray(noRerun)}))))`
  // One probe first: on a healthy cluster it finds nothing, and the sweep costs one statement a second.
  const found = await runQuery(
    db,
    sql`SELECT id, type, ${rerunnable} AS rerun FROM worker_jobs WHERE ${RUNNING} AND ${which} ORDER BY id LIMIT ${BATCH}`,
  )
  if (found.length === 0) return { released: [], failed: [], cancelled: [], typeOf: new Map() }
  const rerunIds = found.filter((r) => r.rerun === true).map((r) => Number(r.id))
  // The conditions are checked again under the row lock: the holder may have finished it meanwhile.
  const released =
    rerunIds.length === 0
      ? { ids: new Set<number>(), cancelled: new Set<number>() }
      : await releaseJobs(db, {
          error: reason,
          where: sql`id IN (SELECT id FROM worker_jobs WHERE id = ANY(${bigintArray(rerunIds)}) AND ${RUNNING} AND ${which}
            AND ${rerunnable} FOR UPDATE SKIP LOCKED)`,
        })
  const failed: number[] = []
  const cancelled = [...released.cancelled]
  for (const r of found) {
    const id = Number(r.id)
    if (r.rerun === true) continue
    const done = await failOne(db, id, which, reason)
    if (done === 'cancelled') cancelled.push(id)
    else if (done) failed.push(id)
  }
  // A released row NOTIFYs as it goes back to pending; a finished one (failed, or cancelled, by either
  // path) does not. It may have held a concurrency-limited slot, so every worker is woken, or the jobs its
  // limit held back would wait for the poll. Rare (a rescue), so not worth telling the types apart.
  if (failed.length > 0 || cancelled.length > 0) await announceFreedSlots(db)
  const typeOf = new Map(found.map((r) => [Number(r.id), String(r.type)]))
  return { released: [...released.ids].filter((id) => !released.cancelled.has(id)), failed, cancelled, typeOf }
}

function targetSql(target: RescueTarget): SQL | null {
  if ('leaseExpired' in target) return sql`lease_expires_at < now()`
  if (target.workerIds.length === 0) return null
  return sql`locked_by = ANY(${textArray(target.workerIds)})`
}

/**
 * Fails one interrupted row in its own transaction; false when another rescuer took it first, 'cancelled'
 * when its cancel had been requested meanwhile (then it is finished as cancelled, without a successor).
 */
async function failOne(db: Database, id: number, which: SQL, reason: string): Promise<boolean | 'cancelled'> {
  const run = (withSuccessor: boolean) =>
    db.transaction(async (tx): Promise<boolean | 'cancelled'> => {
      const [row] = (await tx.execute(
        sql`SELECT id, type, user_id AS "userId", data, priority, concurrency_key AS "concurrencyKey", cron_schedule AS "cronSchedule",
              auto_reschedule_on_failure AS "autoRescheduleOnFailure",
              auto_reschedule_on_failure_delay AS "autoRescheduleOnFailureDelay", remove_delay AS "removeDelay",
              persistent, tag, attempt, max_attempts AS "maxAttempts", cancelled_at IS NOT NULL AS "cancelled"
            FROM worker_jobs WHERE id = ${id} AND ${RUNNING} AND ${which} FOR UPDATE SKIP LOCKED`,
      )) as unknown as (FinishedJob & { id: string | number; cancelled: boolean })[]
      if (!row) return false
      const { cancelled, ...rest } = row
      const job: FinishedJob = { ...rest, id: Number(row.id) }
      const error = job.attempt >= job.maxAttempts ? `${reason} (attempt ${job.attempt} of ${job.maxAttempts})` : reason
      if (cancelled) {
        await tx.execute(sql`
          UPDATE worker_jobs AS j SET finished = now(), success = false, result = ${cancelledResult(sql`jsonb_build_object('error', ${error}::text)`)},
            remove_at = now() + make_interval(secs => j.remove_delay), updated_at = now()
          WHERE j.id = ${id}`)
        return 'cancelled'
      }
      const plan = planFinish(job, false, { error }, new Date())
      await tx.execute(sql`
        UPDATE worker_jobs SET finished = now(), success = false, result = ${storableJson(plan.result)}::jsonb,
          remove_at = now() + make_interval(secs => remove_delay), updated_at = now()
        WHERE id = ${id}`)
      if (withSuccessor && plan.successor) await insertSuccessors(tx, [plan.successor])
      return true
    })
  try {
    return await run(true)
  } catch (err) {
    if (isTransientDbError(err)) throw err
    // Its successor could not be written: finish it anyway, so the rescuer moves past it next time.
    return run(false)
  }
}
