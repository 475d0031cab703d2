import { sql } from 'drizzle-orm'
import { type Executor, runQuery } from '../../db/client'
import type { WorkerJob } from '../../db/schema'

/**
 * Claims up to `limit` due jobs for `workerId` in one autocommit statement.
 *
 * - The inner SELECT walks worker_jobs_claim_idx (due, id WHERE started IS NULL AND finished IS NULL) in
 *   order and stops after `limit` rows, so its cost depends on the backlog of due jobs, not on how many
 *   finished rows the table keeps.
 * - FOR UPDATE SKIP LOCKED: rows another worker is claiming at this instant are skipped, not waited for,
 *   and each row is re-checked under its lock, so two workers can never claim the same job.
 * - ORDER BY due, id: oldest first, and ties in submission order.
 * - One statement, no open transaction: the lock lasts only for the UPDATE, and the handler later runs
 *   with nothing held; ownership from then on is `locked_by` plus the lease.
 * - The claimed rows come back as one JSON array (one column, one JSON.parse) holding only what a worker
 *   needs, timestamps as epoch milliseconds: decoding 16 text columns per row in the driver was the
 *   largest CPU cost of a worker.
 */
export async function claimJobs(
  db: Executor,
  opts: { workerId: string; limit: number; leaseMs: number },
): Promise<WorkerJob[]> {
  const rows = await runQuery(
    db,
    sql`
    WITH claimed AS (
      UPDATE worker_jobs
      SET started = now(), locked_by = ${opts.workerId},
          lease_expires_at = now() + make_interval(secs => ${opts.leaseMs / 1000}), updated_at = now()
      WHERE id IN (
        SELECT id FROM worker_jobs
        WHERE started IS NULL AND finished IS NULL AND due <= now()
        ORDER BY due, id
        LIMIT ${opts.limit}
        FOR UPDATE SKIP LOCKED
      )
      RETURNING id, type, user_id, data, cron_schedule, auto_reschedule_on_failure, auto_reschedule_on_failure_delay,
        remove_delay, persistent, tag, attempt, max_attempts, rescheduled_from_job, due, started, created_at
    )
    SELECT coalesce(json_agg(json_build_array(id, type, user_id, data, cron_schedule, auto_reschedule_on_failure,
        auto_reschedule_on_failure_delay, remove_delay, persistent, tag, attempt, max_attempts, rescheduled_from_job,
        extract(epoch FROM due) * 1000, extract(epoch FROM started) * 1000, extract(epoch FROM created_at) * 1000)
      ORDER BY due, id), '[]')::text AS jobs
    FROM claimed`,
  )
  type Tuple = [number, string, number, unknown, string | null, boolean, number, number, boolean, string | null, number, number | null, number | null, number, number, number]
  // RETURNING does not keep the subquery's order, so json_agg sorts: oldest first, ties by id.
  return (JSON.parse(String(rows[0]!.jobs)) as Tuple[]).map((t) => {
    const started = new Date(t[14])
    return {
      id: t[0],
      type: t[1],
      userId: t[2],
      data: t[3],
      cronSchedule: t[4],
      autoRescheduleOnFailure: t[5],
      autoRescheduleOnFailureDelay: t[6],
      removeDelay: t[7],
      persistent: t[8],
      tag: t[9],
      attempt: t[10],
      maxAttempts: t[11],
      rescheduledFromJob: t[12],
      due: new Date(t[13]),
      started,
      finished: null,
      removeAt: null,
      success: null,
      result: null,
      lockedBy: opts.workerId,
      lastError: null,
      leaseExpiresAt: new Date(started.getTime() + opts.leaseMs),
      createdAt: new Date(t[15]),
      updatedAt: started,
    }
  })
}

/** The earliest due time of any pending job, so an idle worker can sleep exactly until then. */
export async function nextDueTime(db: Executor): Promise<Date | null> {
  const rows = await runQuery(
    db,
    sql`SELECT extract(epoch FROM due)::float8 * 1000 AS due_ms FROM worker_jobs
        WHERE started IS NULL AND finished IS NULL ORDER BY due, id LIMIT 1`,
  )
  const due = rows[0]?.due_ms
  return typeof due === 'number' ? new Date(due) : null
}

/** Extends the leases of every job this worker still runs; a rescued job is no longer extended. */
export async function extendLeases(db: Executor, opts: { workerId: string; leaseMs: number }): Promise<number> {
  const rows = await runQuery(
    db,
    sql`UPDATE worker_jobs SET lease_expires_at = now() + make_interval(secs => ${opts.leaseMs / 1000})
        WHERE locked_by = ${opts.workerId} AND started IS NOT NULL AND finished IS NULL
        RETURNING id`,
  )
  return rows.length
}
