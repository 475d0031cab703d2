import { type SQL, sql } from 'drizzle-orm'
import { compileQuery, type Executor, runQuery } from '../../db/client'
import type { WorkerJob } from '../../db/schema'
import { notifyDue } from './notify'
import { bigintArray, jsonTextArray, textArray } from './params'
import { CLAIMABLE_TEXT, heldBy } from './states'

/**
 * The rows of worker_jobs_claim_idx, exactly its predicate: pending rows of types without a concurrency
 * limit (limited types have their own index and claim, queue/limits.ts).
 */
const CLAIMABLE = sql.raw(CLAIMABLE_TEXT)

/**
 * The distinct priorities of the claimable rows, lowest first, as a recursive CTE named `priorities` (a
 * loose index scan of worker_jobs_claim_idx: each step is one descent to the next larger priority). The
 * last row is a NULL that ends the recursion; readers skip it. The claim, nextLook and dueHeads (heads.ts)
 * read it.
 */
export const PRIORITIES = sql`priorities AS (
      (SELECT priority FROM worker_jobs WHERE ${CLAIMABLE} ORDER BY priority LIMIT 1)
      UNION ALL
      SELECT (SELECT w.priority FROM worker_jobs AS w WHERE ${CLAIMABLE} AND w.priority > p.priority ORDER BY w.priority LIMIT 1)
      FROM priorities AS p WHERE p.priority IS NOT NULL
    )`

/**
 * Claims up to `limit` due jobs of the given types for `workerId` in one autocommit statement.
 *
 * - Order: lower priority first (the built-in jobs run at a negative one), then the oldest due, then
 *   the lowest id. worker_jobs_claim_idx is (priority, due, id) WHERE pending. A plain ORDER BY priority,
 *   due, id LIMIT n over it cannot stop at the first row not yet due (due is its second column), so with
 *   fewer than n jobs due it walked every future-dated row: 47 ms a claim with a million of them. So the
 *   claim is a loose index scan: PRIORITIES lists the distinct priorities of the pending rows (one index
 *   descent each, lazily, lowest first), and for each one the LATERAL range scan (priority = p AND due <=
 *   now()) stops at its first future row. The outer LIMIT stops pulling once it has n rows, so later
 *   priorities are not even looked at and no more than n rows are locked: 0.4 ms on the same table.
 * - Cost: it depends on the backlog of due jobs and on the number of priorities in use, not on how many
 *   finished or future-dated rows the table keeps.
 * - MATERIALIZED is a fence: the CTE runs exactly once and the UPDATE joins its result. With
 *   `WHERE id IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)` the planner may turn the IN into a nested-loop
 *   semi-join that rescans the locking subquery, and each rescan skips the rows the previous one locked:
 *   LIMIT 1 once claimed 6 rows. A worker must never get more jobs than it has free slots.
 * - FOR UPDATE SKIP LOCKED: rows another worker is claiming at this instant are skipped, not waited for,
 *   and each row is re-checked under its lock, so two workers can never claim the same job.
 * - `type = ANY(types)`: a server claims only the types it registers, so during a rolling deploy an old
 *   server never claims (and fails) a type that only the new one knows; such rows stay pending.
 * - The UPDATE finds its rows by `id = ANY(ARRAY(SELECT id FROM picked))`, a primary-key lookup whatever
 *   the statistics say. As a join (`FROM picked WHERE j.id = picked.id`) the planner chose by its row
 *   estimates: a hash join over a sequential scan of every pending row once the backlog looked small
 *   (16 ms a claim with 20,000 rows queued), and on a table not analyzed yet (a fresh deploy's first
 *   burst) a nested loop comparing every pending row with every picked one: 1 s a claim at 20,000 rows.
 * - One statement, no open transaction: the lock lasts only for the UPDATE, and the handler later runs
 *   with nothing held; ownership from then on is `locked_by` plus the lease.
 * - The claimed rows come back as one JSON array (one column, one JSON.parse) holding only what a worker
 *   needs, timestamps as epoch milliseconds: decoding 16 text columns per row in the driver was the
 *   largest CPU cost of a worker.
 */
export async function claimJobs(db: Executor, opts: ClaimOptions): Promise<WorkerJob[]> {
  const rows = await compiledClaim(db, claimValues(opts, typesJson(opts.types)))
  return decodeClaimed(rows, opts)
}

/** The largest smallint: "every priority" for a claim that is not bounded (claimUrgent and claimRound bound theirs). */
export const MAX_PRIORITY = 32767

/**
 * The claim's text is built once (claimSql with placeholders) and each call only binds values: building it
 * through drizzle's template and rendering it allocated about 20 KB per claim, and that garbage, at one
 * claim per job, made the collector pause the worker every few dozen jobs (1-4 ms each, the pickup
 * latency's tail). A worker's types never change, so their JSON is kept too.
 */
const compiledClaim = compileQuery(claimSql)

const typesJsonCache = new WeakMap<readonly string[], string>()
function typesJson(types: readonly string[]): string {
  const cached = typesJsonCache.get(types)
  if (cached !== undefined) return cached
  const json = JSON.stringify(types)
  typesJsonCache.set(types, json)
  return json
}

export interface ClaimOptions {
  workerId: string
  limit: number
  leaseMs: number
  types: readonly string[]
  /** Only rows at this priority or lower (more urgent): the urgent slots' claim. */
  maxPriority?: number
}

/** The claim statement itself, with its values inline (for the tests that read its plan). */
export function claimStatement(opts: ClaimOptions): SQL {
  return claimSql(claimValues(opts, JSON.stringify(opts.types)))
}

function claimValues(opts: ClaimOptions, types: string): ClaimValues {
  return { workerId: opts.workerId, limit: opts.limit, leaseSecs: opts.leaseMs / 1000, types, maxPriority: opts.maxPriority ?? MAX_PRIORITY }
}

interface ClaimValues extends Record<string, unknown> {
  workerId: string
  limit: number
  leaseSecs: number
  /** The JSON array of the type names. */
  types: string
  maxPriority: number
}

/** The claim statement over its values (compileQuery renders it once with placeholders). */
function claimSql(v: ClaimValues): SQL {
  return sql`
    WITH RECURSIVE ${PRIORITIES}, picked AS MATERIALIZED (
      SELECT x.id FROM priorities AS p
      CROSS JOIN LATERAL (
        SELECT id FROM worker_jobs
        WHERE ${CLAIMABLE} AND priority = p.priority AND due <= now() AND type = ANY(${jsonTextArray(v.types)})
        ORDER BY due, id
        LIMIT ${v.limit}
        FOR UPDATE SKIP LOCKED
      ) AS x
      WHERE p.priority IS NOT NULL AND p.priority <= ${v.maxPriority}
      LIMIT ${v.limit}
    ), ${claimedRows(v, sql`picked`)}`
}

/**
 * The tail every claim shares: `claimed` updates the rows of the `picked` CTE that are still pending
 * (re-checked under the row lock), and the rows come back as one JSON array for decodeClaimed. `more`:
 * the start time to stamp (default now()), CTEs that read `claimed`, and extra columns of the result.
 */
export function claimedJobsSelect(opts: ClaimOptions, picked: SQL, more: { at?: SQL; ctes?: SQL; columns?: SQL } = {}): SQL {
  return claimedRows({ workerId: opts.workerId, leaseSecs: opts.leaseMs / 1000 }, picked, more)
}

function claimedRows(v: { workerId: string; leaseSecs: number }, picked: SQL, more: { at?: SQL; ctes?: SQL; columns?: SQL } = {}): SQL {
  const at = more.at ?? sql`now()`
  return sql`claimed AS (
      UPDATE worker_jobs AS j
      SET started = ${at}, locked_by = ${v.workerId},
          lease_expires_at = ${at} + make_interval(secs => ${v.leaseSecs}), updated_at = now()
      WHERE j.id = ANY(ARRAY(SELECT id FROM ${picked})) AND j.started IS NULL AND j.finished IS NULL
      RETURNING j.id, j.type, j.user_id, j.data, j.cron_schedule, j.auto_reschedule_on_failure,
        j.auto_reschedule_on_failure_delay, j.remove_delay, j.persistent, j.tag, j.attempt, j.max_attempts,
        j.rescheduled_from_job, j.due, j.started, j.created_at, j.last_error, j.priority, j.concurrency_key
    )${more.ctes ? sql`, ${more.ctes}` : sql``}
    SELECT coalesce(json_agg(json_build_array(id, type, user_id, data, cron_schedule, auto_reschedule_on_failure,
        auto_reschedule_on_failure_delay, remove_delay, persistent, tag, attempt, max_attempts, rescheduled_from_job,
        extract(epoch FROM due) * 1000, extract(epoch FROM started) * 1000, extract(epoch FROM created_at) * 1000, last_error, priority,
        concurrency_key)
      ORDER BY priority, due, id), '[]')::text AS jobs${more.columns ? sql`, ${more.columns}` : sql``}
    FROM claimed`
}

export function decodeClaimed(rows: Record<string, unknown>[], opts: ClaimOptions): WorkerJob[] {
  type Tuple = [number, string, number, unknown, string | null, boolean, number, number, boolean, string | null, number, number, number | null, number, number, number, string | null, number, string | null]
  // RETURNING does not keep the subquery's order, so json_agg sorts as the claim did.
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
      priority: t[17],
      concurrencyKey: t[18],
      started,
      finished: null,
      removeAt: null,
      success: null,
      result: null,
      lockedBy: opts.workerId,
      lastError: t[16],
      leaseExpiresAt: new Date(started.getTime() + opts.leaseMs),
      // Only a pending row is claimed, and cancelling a pending row finishes it.
      cancelledAt: null,
      createdAt: new Date(t[15]),
      updatedAt: started,
    }
  })
}

/**
 * When an idle worker should look again, asked right after a claim that took fewer rows than it could:
 * - `lockedDue`: a row of ours is already due but the claim could not take it, so another transaction
 *   holds it locked (another worker's claim in flight, which usually takes it; or one that will roll back
 *   and leave it to us). The caller looks again shortly instead of trusting that row's due time.
 * - `nextDue`: the earliest due time still in the future, for the due timer. Only the future counts: a row
 *   already due must not hide the jobs after it, which would then wait for the poll.
 *
 * The claim index is ordered by priority first, so "the earliest due time" is not its first entry. Both
 * probes walk it as a loose index scan instead: the recursive part finds each distinct priority of the
 * pending rows by one index descent, and for each one the first entry due (or not yet due) is one more
 * descent. The cost grows with the number of priorities in use (a handful), not with the backlog.
 */
export async function nextLook(db: Executor, types: readonly string[]): Promise<{ lockedDue: boolean; nextDue: Date | null }> {
  const ours = sql`${CLAIMABLE} AND type = ANY(${textArray(types)})`
  const rows = await runQuery(
    db,
    sql`
    WITH RECURSIVE ${PRIORITIES}
    SELECT
      bool_or(EXISTS (SELECT 1 FROM worker_jobs WHERE ${ours} AND priority = p.priority AND due <= now())) AS locked_due,
      min((SELECT extract(epoch FROM due)::float8 * 1000 FROM worker_jobs
           WHERE ${ours} AND priority = p.priority AND due > now() ORDER BY due, id LIMIT 1)) AS due_ms
    FROM priorities AS p WHERE p.priority IS NOT NULL`,
  )
  const due = rows[0]?.due_ms
  return { lockedDue: rows[0]?.locked_due === true, nextDue: typeof due === 'number' ? new Date(due) : null }
}

/**
 * Extends the leases of exactly the jobs this worker holds (`id = ANY`), and returns the ids it still
 * holds: a job missing from the answer was rescued meanwhile and must be aborted here. Rows locked_by
 * this worker that it does not know (a claim whose reply was lost) are not extended, so their lease runs
 * out and the rescuer returns them to pending.
 * `cancelled` names the held rows whose cancel was requested (cancelled_at set): the backstop for a lost
 * cancel notification, so their handlers' signals fire within one renewal period at the latest.
 */
export async function extendLeases(
  db: Executor,
  opts: { workerId: string; leaseMs: number; ids: readonly number[] },
): Promise<{ held: Set<number>; cancelled: Set<number> }> {
  const held = new Set<number>()
  const cancelled = new Set<number>()
  if (opts.ids.length === 0) return { held, cancelled }
  const rows = await runQuery(
    db,
    sql`UPDATE worker_jobs SET lease_expires_at = now() + make_interval(secs => ${opts.leaseMs / 1000})
        WHERE id = ANY(${bigintArray(opts.ids)}) AND ${heldBy(opts.workerId)}
        RETURNING id, cancelled_at IS NOT NULL AS cancelled`,
  )
  for (const r of rows) {
    held.add(Number(r.id))
    if (r.cancelled === true) cancelled.add(Number(r.id))
  }
  return { held, cancelled }
}

/**
 * Returns to pending the rows locked_by this worker that it does not hold: a claim that committed but
 * whose reply never arrived. They never ran, so attempt is unchanged. Only safe while no claim of this
 * worker is in flight: the claim loop calls it between its claims, with no hand-off in flight and none
 * starting (workerLoop.ts, exclusiveOfHandoffs).
 */
export async function releaseUnknownClaims(db: Executor, opts: { workerId: string; held: readonly number[] }): Promise<number> {
  const rows = await runQuery(
    db,
    sql`
    WITH released AS (
      UPDATE worker_jobs SET started = NULL, locked_by = NULL, lease_expires_at = NULL, updated_at = now()
      WHERE ${heldBy(opts.workerId)} AND NOT (id = ANY(${bigintArray(opts.held)}))
      RETURNING id, due
    )
    ${notifyDue(sql`released`)}`,
  )
  return rows.length
}
