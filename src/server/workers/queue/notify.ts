import { type SQL, sql } from 'drizzle-orm'

/** The channel the insert trigger notifies (see drizzle/0001_notify_trigger.sql). */
export const JOBS_CHANNEL = 'worker_jobs'

/**
 * The channel cancelJob notifies (payload: the job id) when it asks a running job to stop: every child
 * LISTENs on it and aborts the handler's signal if it holds that job. The lease renewal is the backstop
 * for a lost notification (claim.ts, extendLeases).
 */
export const CANCEL_CHANNEL = 'worker_jobs_cancel'

/**
 * The tail of a statement that made rows pending without inserting them (a release, a rescue): it returns
 * the CTE's ids and NOTIFYs the earliest due time, exactly as the insert trigger does for new rows, so the
 * workers wake for them instead of waiting for their poll. `cte` must have columns id and due; a row
 * whose due is NULL (finished instead of made pending, e.g. a cancelled one) is not announced, and comes
 * back with `finished` true.
 */
export function notifyDue(cte: SQL): SQL {
  return sql`, announced AS (
      SELECT pg_notify(${JOBS_CHANNEL}, floor(extract(epoch FROM min(due)) * 1000)::bigint::text) FROM ${cte} HAVING count(due) > 0
    )
    SELECT id, due IS NULL AS finished FROM ${cte} CROSS JOIN (SELECT count(*) FROM announced) AS a`
}
