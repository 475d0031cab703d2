import { type SQL, sql } from 'drizzle-orm'
import { compileQuery, type Executor } from '../../db/client'
import type { WorkerJob } from '../../db/schema'
import { insertedRow, toJson } from './rows'
import { PENDING } from './states'
import type { NewJobRow } from './successor'

/** Rows per INSERT statement: big enough to amortise the round trip, small enough to keep one statement cheap. */
export const INSERT_CHUNK = 20_000

/**
 * Inserts validated rows with INSERT statements on `db` (submit.ts decides between this and COPY, and
 * about the transaction: more than INSERT_CHUNK rows are several statements, so give a transaction then).
 * All rows of a statement travel as one json parameter expanded by json_to_recordset (json, not jsonb: it
 * is only read once, and skipping jsonb's tree building made it faster), so 100,000 rows cost a few
 * statements instead of 100,000 bound-parameter tuples (Postgres caps a statement at 65,535 parameters).
 * The insert trigger sends one NOTIFY per statement.
 * `onTagConflict: 'skip'` leaves an existing pending row of the same (user, tag) in place (cron successors, seeding).
 */
export async function insertJobs(
  db: Executor,
  rows: readonly NewJobRow[],
  opts: { onTagConflict?: 'error' | 'skip' } = {},
): Promise<WorkerJob[]> {
  const out: WorkerJob[] = []
  for (let i = 0; i < rows.length; i += INSERT_CHUNK) {
    const chunk = rows.slice(i, i + INSERT_CHUNK).map((r) => ({
      type: r.type,
      user_id: r.userId,
      data: r.data ?? {},
      due: r.due.toISOString(),
      priority: r.priority,
      concurrency_key: r.concurrencyKey,
      cron_schedule: r.cronSchedule,
      auto_reschedule_on_failure: r.autoRescheduleOnFailure,
      auto_reschedule_on_failure_delay: r.autoRescheduleOnFailureDelay,
      remove_delay: r.removeDelay,
      persistent: r.persistent,
      tag: r.tag,
      attempt: r.attempt,
      max_attempts: r.maxAttempts,
      rescheduled_from_job: r.rescheduledFromJob,
    }))
    const insert = opts.onTagConflict === 'skip' ? insertSkippingTags : insertRows
    const inserted = await insert(db, { rows: toJson(chunk) })
    out.push(...completeRows(rows.slice(i, i + INSERT_CHUNK), inserted, opts.onTagConflict === 'skip'))
  }
  return out
}

/** The INSERT over one json parameter (`rows`); rendered once per variant (compileQuery). */
function insertSql({ rows }: { rows: string }, conflict: SQL): SQL {
  return sql`
    INSERT INTO worker_jobs (type, user_id, data, due, priority, concurrency_key, cron_schedule, auto_reschedule_on_failure,
      auto_reschedule_on_failure_delay, remove_delay, persistent, tag, attempt, max_attempts, rescheduled_from_job)
    SELECT type, user_id, data, due, priority, concurrency_key, cron_schedule, auto_reschedule_on_failure,
      auto_reschedule_on_failure_delay, remove_delay, persistent, tag, attempt, max_attempts, rescheduled_from_job
    FROM json_to_recordset(${rows}::text::json) AS r(type text, user_id integer, data jsonb, due timestamptz, priority smallint, concurrency_key text,
      cron_schedule text, auto_reschedule_on_failure boolean, auto_reschedule_on_failure_delay integer,
      remove_delay integer, persistent boolean, tag text, attempt integer, max_attempts integer, rescheduled_from_job bigint)
    ${conflict}
    RETURNING id, user_id, tag, created_at`
}

const insertRows = compileQuery((v: { rows: string }) => insertSql(v, sql``))
// The target is the partial unique index worker_jobs_pending_tag_uidx, predicate included.
const insertSkippingTags = compileQuery((v: { rows: string }) =>
  insertSql(v, sql`ON CONFLICT (user_id, tag) WHERE tag IS NOT NULL AND ${PENDING} DO NOTHING`),
)

const tagKey = (userId: unknown, tag: unknown) => `${userId}:${tag}`

/**
 * Builds the returned rows from what we inserted plus the few values only the database knows (id,
 * created_at), instead of RETURNING * and parsing 23 columns per row: for bulk submits that parsing cost
 * more than the insert itself. Identity values are drawn in the order the SELECT produces rows, so
 * ascending ids match input order. With skipped tag conflicts, rows are matched by (user, tag) instead.
 */
function completeRows(rows: readonly NewJobRow[], inserted: Record<string, unknown>[], skipping: boolean): WorkerJob[] {
  const byId = inserted.map((r) => ({ id: Number(r.id), key: r.tag === null ? null : tagKey(r.user_id, r.tag), createdAt: String(r.created_at) }))
  byId.sort((a, b) => a.id - b.id)
  let lastStamp = ''
  let lastDate = new Date(0)
  const toDate = (s: string) => {
    if (s !== lastStamp) {
      lastStamp = s
      lastDate = new Date(s)
    }
    return lastDate
  }
  let source: readonly NewJobRow[] = rows
  if (skipping && byId.length !== rows.length) {
    const kept = new Set(byId.map((r) => r.key))
    source = rows.filter((r) => r.tag === null || kept.has(tagKey(r.userId, r.tag)))
  }
  return byId.map((db, k) => insertedRow(source[k]!, db.id, toDate(db.createdAt)))
}

/**
 * Takes a transaction-scoped advisory lock per (user, tag), in sorted order so two transactions can never
 * wait on each other in a cycle. Everything that creates a pending tagged row (submit, successors, cron
 * seeding) takes it first, which makes "cancel the old pending row, insert the new one" atomic across
 * servers. A tag belongs to its user, so the key holds both: user 1's "report" never waits for user 2's.
 */
export async function lockTags(tx: Executor, rows: Iterable<{ userId: number; tag: string | null }>): Promise<void> {
  const keys = new Map<string, { user_id: number; tag: string }>()
  for (const r of rows) if (r.tag) keys.set(tagKey(r.userId, r.tag), { user_id: r.userId, tag: r.tag })
  if (keys.size === 0) return
  // user_id is digits, so "<user>:<tag>" cannot collide between two keys whatever the tag holds.
  await tx.execute(sql`
    SELECT pg_advisory_xact_lock(hashtextextended('worker_jobs.tag:' || k.user_id || ':' || k.tag, 0))
    FROM jsonb_to_recordset(${toJson([...keys.values()])}::text::jsonb) AS k(user_id integer, tag text)
    ORDER BY k.user_id, k.tag`)
}
