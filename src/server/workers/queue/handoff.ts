import { type SQL, sql } from 'drizzle-orm'
import { type Database, pipelinedTransaction, runQuery } from '../../db/client'
import type { WorkerJob } from '../../db/schema'
import { claimedJobsSelect, decodeClaimed } from './claim'
import { type Outcome, plainFinish, type Written } from './finish'
import { firstLimitedClaim, isKeyed, LIMITED_PENDING, type LimitedClaimOptions, limitedPrelude, limitedPriorities, limitedResult, type TypeLimit } from './limits'
import { RUNNING } from './states'

export interface Handoff {
  /** The outcomes' rows that were written, each with what it became. */
  written: Written
  /** The type's jobs claimed into the freed slots (already running as far as the database knows). */
  jobs: WorkerJob[]
  /**
   * True when the claim is the final word on the freed slots: what it left, no worker could start now
   * (a keyed type's window can fall short of that; see claimLimited). Otherwise the slots are to be offered
   * again by a full claim.
   */
  settled: boolean
  /** A rate held jobs back: look again after this long (as claimLimited's retryInMs). */
  retryInMs: number | null
}

/**
 * The hand-off of concurrency slots: the outcomes of jobs of one limited type and the claim of that
 * type's next jobs into the slots they free, in one transaction.
 *
 * Written apart (the outcome, then a claim round), a limit-1 type's next job waited two round trips, a
 * wake of the worker's loop and the end of the round the loop had in flight; inside a no-op flood on a
 * saturated database that gap was about 15 ms for each job of the type. Here the outcome and the claim
 * leave together, and the slot never looks free to any other worker: nothing to announce.
 *
 * Order: the finish first, then the type's advisory lock, then the claim. The finish takes the lock of
 * the finished rows before waiting for the type's lock, so this transaction never waits on a row while
 * holding the lock that every claim of the type in the cluster needs. The claim's snapshot is taken after
 * the finish ran, in the same transaction, so it counts the finished rows out of the running ones; other
 * workers' claims, serialised by the lock, see the finish and the claim together, at commit.
 *
 * Priority: the claim takes only rows ahead of the worker's other claims' most urgent due row in
 * (priority, due, id) order (headBound, otherHeadsBound), the order a claim round gives slots in: a
 * limited type's backlog never takes a slot that more urgent work waits for, nor, at one priority, a slot
 * that older work waits for (the slot is sticky otherwise, and a limit-1 backlog would starve the worker's
 * other work of that priority). Such a slot is left to the loop, which gives it to that work, and
 * announced (not `settled`).
 *
 * Returns null when an outcome needs more than a finish (a retry, a cron successor, a rerun): the
 * caller writes those with finishJobs and leaves the slots to the loop's next claim.
 */
export async function finishAndClaimNext(
  db: Database,
  opts: LimitedClaimOptions & { outcomes: readonly Outcome[] },
): Promise<Handoff | null> {
  const finish = plainFinish(opts.workerId, opts.outcomes)
  if (!finish) return null
  if (replaceable(opts.limits)) {
    const [row] = await runQuery(db, replaceStatement(opts, finish.statement))
    const jobs = decodeClaimed([row!], opts)
    const done = JSON.parse(String(row!.fin)) as [number, boolean][]
    // Every slot it finished was refilled; otherwise the loop's next round and the announce take over.
    return { written: finish.written(done.map(([id, cancelled]) => ({ id, cancelled }))), jobs, settled: jobs.length >= opts.limit, retryInMs: null }
  }
  const results = await pipelinedTransaction(db, [finish.statement, ...limitedPrelude(opts), firstLimitedClaim(opts)])
  const claimRows = results.at(-1)!
  const claimed = limitedResult(decodeClaimed(claimRows, opts), claimRows)
  // Settled: the claim saw all the type may start (no other work took precedence, no rate held it back,
  // the window was not cut short) and took it, or every freed slot was refilled. For a keyed type, only
  // when it took nothing: the row it took may be another key's, and the freed key's next job, which may
  // now start, is then for the loop's next round or another worker to take (announced).
  const sawAll = claimRows[0]?.exact !== false && !claimed.moreBeyondBound && claimed.retryInMs === null
  const settled = isKeyed(opts.limits) ? sawAll && claimed.jobs.length === 0 : sawAll || claimed.jobs.length >= opts.limit
  return { written: finish.written(results[0]!), jobs: claimed.jobs, settled, retryInMs: claimed.retryInMs }
}

/** A type whose only limit is a type-wide cap: its hand-off can be a replacement (replaceStatement). */
const replaceable = (limits: TypeLimit) => limits.concurrency !== null && !isKeyed(limits) && limits.rate === null

/**
 * The hand-off of a type whose only limit is a type-wide cap, in one autocommit statement (one round trip,
 * against three for the locked transaction: inside a saturated flood each costs about 4 ms), without the
 * type's advisory lock. Why that is safe: it claims at most as many rows as its own finish (`fin`) moves
 * from running to finished (`freed`: rows of the type that were running; a row requeued by hand with its
 * locked_by left is finished too, but frees nothing), in the same commit, so no commit of it ever raises
 * the type's running count:
 * just before it commits, the count includes the rows it finishes (they are ours, running, and locked by
 * its UPDATE), and just after, the rows it claimed stand in their place. Every other claim of the type
 * holds the lock and adds only what its limit leaves room for, so the count stays within the limit
 * whichever order the commits come in. Two claims can never take the same row: each row is taken under
 * its row lock and re-checked (SKIP LOCKED, then `started IS NULL` in the UPDATE).
 *
 * The count of running rows (its own snapshot) only matters when the type runs over its cap already (the
 * cap was lowered by a deploy): then it replaces only what keeps the count at the cap, none while it is
 * further over, so the count comes down as jobs end. Counted in the running-lease index's order with a
 * LIMIT, so the planner takes a plain index scan: a bitmap scan would re-read every dead entry a flood left
 * there, on every hand-off (see claimLimited). That scan still reads every running row of every type when
 * the type is under its cap (as the locked claim's count does).
 */
function replaceStatement(opts: LimitedClaimOptions, finish: SQL): SQL {
  const cap = opts.limits.concurrency!
  const inBound = opts.headBound
    ? sql`AND (NOT EXISTS (SELECT 1 FROM bound) OR (priority, due, id) < (SELECT b.priority, b.due, b.id FROM bound AS b))`
    : sql``
  return sql`
    WITH RECURSIVE fin AS (${finish}),
    ${opts.headBound ? sql`bound AS MATERIALIZED (${opts.headBound}),` : sql``}
    freed AS MATERIALIZED (SELECT count(*)::int AS f FROM fin WHERE ran AND type = ${opts.type}),
    room AS MATERIALIZED (
      SELECT greatest(0, least(
        ${opts.limit}::int,
        (SELECT f FROM freed),
        ${cap}::int + (SELECT f FROM freed) - (SELECT count(*) FROM (
          SELECT 1 FROM worker_jobs WHERE ${RUNNING} AND type = ${opts.type} ORDER BY lease_expires_at LIMIT ${cap + opts.limit}::int
        ) AS r)))::int AS n
    ),
    ${limitedPriorities(opts.type)},
    picked AS MATERIALIZED (
      SELECT x.id FROM lp CROSS JOIN LATERAL (
        SELECT id FROM worker_jobs
        WHERE ${LIMITED_PENDING} AND type = ${opts.type} AND priority = lp.priority AND due <= now() ${inBound}
        ORDER BY due, id
        LIMIT (SELECT n FROM room)
        FOR UPDATE SKIP LOCKED
      ) AS x
      WHERE lp.priority IS NOT NULL
      LIMIT (SELECT n FROM room)
    ), ${claimedJobsSelect(opts, sql`picked`, {
      columns: sql`(SELECT coalesce(json_agg(json_build_array(id, cancelled)), '[]')::text FROM fin) AS fin`,
    })}`
}
