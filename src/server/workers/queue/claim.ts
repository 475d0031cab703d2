import { sql } from 'drizzle-orm'
import type { Executor } from '../../db/client'
import type { WorkerJob } from '../../db/schema'
import { rowToJob } from './rows'

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
 */
export async function claimJobs(
  db: Executor,
  opts: { workerId: string; limit: number; leaseMs: number },
): Promise<WorkerJob[]> {
  const rows = await db.execute(sql`
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
    RETURNING *`)
  const jobs = rows.map(rowToJob)
  // RETURNING does not preserve the subquery's order; run the oldest first.
  jobs.sort((a, b) => a.due.getTime() - b.due.getTime() || a.id - b.id)
  return jobs
}

/** The earliest due time of any pending job, so an idle worker can sleep exactly until then. */
export async function nextDueTime(db: Executor): Promise<Date | null> {
  const rows = await db.execute(sql`
    SELECT due FROM worker_jobs WHERE started IS NULL AND finished IS NULL ORDER BY due, id LIMIT 1`)
  const due = rows[0]?.due
  return due ? new Date(String(due)) : null
}

/** Extends the leases of every job this worker still runs; a rescued job is no longer extended. */
export async function extendLeases(db: Executor, opts: { workerId: string; leaseMs: number }): Promise<number> {
  const rows = await db.execute(sql`
    UPDATE worker_jobs SET lease_expires_at = now() + make_interval(secs => ${opts.leaseMs / 1000})
    WHERE locked_by = ${opts.workerId} AND started IS NOT NULL AND finished IS NULL
    RETURNING id`)
  return rows.length
}
