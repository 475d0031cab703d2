import { type SQL, sql } from 'drizzle-orm'

/** The channel the insert trigger notifies (see drizzle/0001_notify_trigger.sql). */
export const JOBS_CHANNEL = 'worker_jobs'

/**
 * The tail of a statement that made rows pending without inserting them (a release, a rescue): it returns
 * the CTE's ids and NOTIFYs the earliest due time, exactly as the insert trigger does for new rows, so the
 * workers wake for them instead of waiting for their poll. `cte` must have columns id and due.
 */
export function notifyDue(cte: SQL): SQL {
  return sql`, announced AS (
      SELECT pg_notify(${JOBS_CHANNEL}, floor(extract(epoch FROM min(due)) * 1000)::bigint::text) FROM ${cte} HAVING count(*) > 0
    )
    SELECT id FROM ${cte} CROSS JOIN (SELECT count(*) FROM announced) AS a`
}
