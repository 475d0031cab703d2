import { sql } from 'drizzle-orm'
import { type Executor, runQuery } from '../../db/client'
import { SERVER_STALE_MS } from './servers'
import { CLAIMABLE_TEXT, LIMITED_PENDING_TEXT } from './states'

/** The job types that at least one live server registers (worker_servers). */
export const LIVE_TYPES = sql`(SELECT DISTINCT unnest(job_types) FROM worker_servers
  WHERE last_seen_at >= now() - make_interval(secs => ${SERVER_STALE_MS / 1000}))`

/**
 * Fails pending jobs whose type no live server has registered for `afterMs` past their due time (a typo
 * in a psql insert, a type removed from the code). Before that they stay pending and visible
 * (worker_jobs_unrunnable in /metrics, from queue/depth.ts), so a rolling deploy that adds a type never loses its early jobs.
 * Does nothing while no server is known at all (every server being down says nothing about the type).
 */
export async function failUnrunnableJobs(db: Executor, afterMs: number): Promise<number[]> {
  // One statement (one transaction of the idle load) with one branch per pending partial index (claimable
  // rows, rows of limited types): the plain pending predicate implies neither index's, and with it this
  // sweep (every 5 s on every server) was a sequential scan of the whole table, finished rows included.
  const branch = (pending: string) =>
    sql`(SELECT id FROM worker_jobs WHERE ${sql.raw(pending)} AND due < now() - make_interval(secs => ${afterMs / 1000}) AND type NOT IN ${LIVE_TYPES} LIMIT 1000)`
  const rows = await runQuery(
    db,
    sql`
    UPDATE worker_jobs SET finished = now(), success = false, updated_at = now(),
      remove_at = now() + make_interval(secs => remove_delay),
      result = jsonb_build_object('error', 'no live server registers job type "' || type || '"; failed after '
        || ${Math.round(afterMs / 1000)} || ' s past its due time')
    WHERE id IN (SELECT id FROM worker_jobs WHERE id IN (${branch(CLAIMABLE_TEXT)} UNION ALL ${branch(LIMITED_PENDING_TEXT)})
                 AND started IS NULL AND finished IS NULL FOR UPDATE SKIP LOCKED)
      AND EXISTS (SELECT 1 FROM worker_servers)
    RETURNING id`,
  )
  return rows.map((r) => Number(r.id))
}
