import { type SQL, sql } from 'drizzle-orm'
import { type Database, runQuery } from '../../db/client'
import { CLAIMABLE_TEXT, LIMITED_PENDING_TEXT, RUNNING_TEXT } from './states'
import { LIVE_TYPES } from './unrunnable'

/** The queue of one job type as /metrics shows it: rows waiting or running, never finished ones. */
export interface TypeDepth {
  type: string
  /** Pending and due: waiting for a worker. */
  pendingDue: number
  /** Pending, due later. */
  pendingFuture: number
  running: number
  /** Age of its oldest due pending row in seconds, by the database's clock; null when none. */
  oldestDueAgeSeconds: number | null
  /** Its due pending rows by the sign of their priority (below 0: built-in and admin jobs; lower runs first). */
  dueBelow: number
  dueZero: number
  dueAbove: number
  /** Some live server registers the type (worker_servers); its due rows are unrunnable when not. */
  live: boolean
}

/**
 * The queue's depth by type, in one statement that reads only the partial indexes' rows, so a scrape
 * costs the same with a million finished rows as with none (tests/http/metricsPlan.test.ts checks the
 * plan: no sequential scan of worker_jobs).
 *
 * Why three branches instead of one `WHERE started IS NULL AND finished IS NULL`: the planner uses a
 * partial index only when the query's WHERE implies its predicate. Pending rows live in two of them,
 * worker_jobs_claim_idx (concurrency_key IS NULL) and worker_jobs_limited_idx (IS NOT NULL), and the
 * plain pending predicate implies neither, so it was a sequential scan of the whole table. Each branch
 * below repeats one index's predicate verbatim (states.ts); running rows come from
 * worker_jobs_running_lease_idx the same way. Finished rows are counted by the event counters instead
 * (worker_job_runs_total), never read back from the table.
 */
export async function queueDepth(db: Database): Promise<TypeDepth[]> {
  const rows = await runQuery(db, queueDepthStatement())
  return rows.map((r) => ({
    type: String(r.type),
    pendingDue: Number(r.pendingDue),
    pendingFuture: Number(r.pendingFuture),
    running: Number(r.running),
    oldestDueAgeSeconds: r.oldestDueAgeSeconds === null ? null : Number(r.oldestDueAgeSeconds),
    dueBelow: Number(r.dueBelow),
    dueZero: Number(r.dueZero),
    dueAbove: Number(r.dueAbove),
    live: r.live === true,
  }))
}

/** The statement of queueDepth (exported for the plan test). */
export function queueDepthStatement(): SQL {
  const pending = sql.raw(`
    SELECT type, due, priority FROM worker_jobs WHERE ${CLAIMABLE_TEXT}
    UNION ALL
    SELECT type, due, priority FROM worker_jobs WHERE ${LIMITED_PENDING_TEXT}`)
  return sql`
    WITH by_type AS (
      SELECT p.type,
        count(*) FILTER (WHERE p.due <= now())::int AS "pendingDue",
        count(*) FILTER (WHERE p.due > now())::int AS "pendingFuture",
        0 AS running,
        extract(epoch FROM now() - min(p.due) FILTER (WHERE p.due <= now()))::float8 AS "oldestDueAgeSeconds",
        count(*) FILTER (WHERE p.due <= now() AND p.priority < 0)::int AS "dueBelow",
        count(*) FILTER (WHERE p.due <= now() AND p.priority = 0)::int AS "dueZero",
        count(*) FILTER (WHERE p.due <= now() AND p.priority > 0)::int AS "dueAbove"
      FROM (${pending}) AS p GROUP BY p.type
      UNION ALL
      SELECT type, 0, 0, count(*)::int, NULL, 0, 0, 0 FROM worker_jobs WHERE ${sql.raw(RUNNING_TEXT)} GROUP BY type
    )
    SELECT type, sum("pendingDue")::int AS "pendingDue", sum("pendingFuture")::int AS "pendingFuture",
      sum(running)::int AS running, max("oldestDueAgeSeconds") AS "oldestDueAgeSeconds",
      sum("dueBelow")::int AS "dueBelow", sum("dueZero")::int AS "dueZero", sum("dueAbove")::int AS "dueAbove",
      type IN ${LIVE_TYPES} AS live
    FROM by_type GROUP BY type`
}
