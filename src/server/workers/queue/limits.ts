import { type SQL, sql } from 'drizzle-orm'
import { type Database, type Executor, pipelinedTransaction, runQuery } from '../../db/client'
import type { WorkerJob } from '../../db/schema'
import type { Job, JobRegistry, RateLimit } from '../jobs/types'
import { type ClaimOptions, claimedJobsSelect, decodeClaimed, MAX_PRIORITY } from './claim'
import { JOBS_CHANNEL } from './notify'
import { textArray } from './params'
import { LIMITED_PENDING_TEXT, RUNNING } from './states'

/**
 * Concurrency limits, cluster-wide, the one owner of their rules. A type may cap how many of its jobs run
 * at once (`concurrency`), and how many per key (`concurrencyKey` + `keyConcurrency`, default 1: one
 * wallet's transactions one at a time). Everything is in Postgres, so every server sees the same state:
 *
 * - A limited type's rows carry concurrency_key (the key, or '' for a type-wide limit only), which puts
 *   them in worker_jobs_limited_idx (type, key, priority, due, id) instead of the claim index: the common
 *   claim never walks past rows that a limit holds back, and never claims them.
 * - The limited claim of a type runs in a transaction holding the type's advisory lock, so the claims of
 *   one limited type are serialised across every worker and server: each sees the running count that the
 *   previous one committed, and two claims can never both take the last slot. The one exception takes no
 *   slot: the hand-off of a type with only a type-wide cap (handoff.ts, replaceStatement) claims no more
 *   rows than it finishes in the same commit, so it never raises the count any claim sees. The lock lasts one short
 *   statement; the handler runs with nothing held (ownership is locked_by plus the lease, as usual).
 * - Running = started and not finished, counted from the rows themselves: a job rescued after its child
 *   died or its lease expired frees its slot by going back to pending (or being finished), with no
 *   counter to drift.
 * - Rates (rateLimit, keyRateLimit): a sliding log of starts in worker_rate_starts, written and read under
 *   the same lock (see claimLimited).
 * - A held-back job stays pending, untouched (not claimed and released in a loop). When a slot frees, the
 *   worker that ran the job writes its outcome and claims the type's next job in one transaction (the
 *   hand-off, handoff.ts); when that cannot settle the slot, it claims again in its loop and NOTIFYs the
 *   jobs channel (announceFreedSlots) unless that claim took all the type's limits allow (workerLoop.ts,
 *   refillHere); the rescuer's release and finish do so too, so a waiting job starts at once instead of at
 *   the next poll.
 */

export interface TypeLimit {
  /** Cluster-wide cap on the type's running jobs; null: none. */
  concurrency: number | null
  /** Cap per key; null: the type has no key. */
  perKey: number | null
  /** Cluster-wide cap on the type's starts per window; null: none. */
  rate: RateLimit | null
  /** The same per key; null: none. */
  keyRate: RateLimit | null
}

/** The type's limits, or null when it has none (its jobs take the common claim). */
export function limitOf(def: Job | undefined): TypeLimit | null {
  if (!def || (def.concurrency === undefined && !def.concurrencyKey && !def.rateLimit)) return null
  return {
    concurrency: def.concurrency ?? null,
    perKey: def.concurrencyKey ? (def.keyConcurrency ?? 1) : null,
    rate: def.rateLimit ?? null,
    keyRate: def.keyRateLimit ?? null,
  }
}

export const limitedTypes = (registry: JobRegistry): string[] => Object.values(registry).filter((d) => limitOf(d)).map((d) => d.type)

/** The longest key kept; a longer one is refused at submit (naming data). */
export const MAX_KEY_CHARS = 200

/**
 * The key the insert trigger gives a pending row of a limited type written without one (psql, a script, an
 * older server): no key function may return it (concurrencyKeyOf refuses it). A type-wide limit counts
 * every running row whatever its key, so its claim takes such rows as they are. A keyed type's claim skips
 * them until a server has computed their real key (reconcileLimitKeys, limitKeys.ts): run under any other
 * key, a wallet's hand-written job could race that wallet's own.
 */
export const UNKEYED = '<unkeyed>'

/**
 * The concurrency_key of a new row of `def` with validated `data`: null for an unlimited type, '' for a
 * type-wide limit only, else the type's concurrencyKey(data). Throws (a message for JobInputError) when
 * the key function throws or returns something that is not a short string.
 */
export function concurrencyKeyOf(def: Job, data: unknown): string | null {
  if (!limitOf(def)) return null
  if (!def.concurrencyKey) return ''
  let key: unknown
  try {
    key = def.concurrencyKey(data)
  } catch (err) {
    throw new Error(`the type's concurrencyKey failed on this data: ${(err as Error)?.message ?? String(err)}`)
  }
  if (typeof key !== 'string') throw new Error(`the type's concurrencyKey returned ${typeof key}, not a string`)
  if (key.length > MAX_KEY_CHARS) throw new Error(`the type's concurrencyKey returned ${key.length} characters (at most ${MAX_KEY_CHARS})`)
  if (key.includes('\u0000') || !key.isWellFormed()) throw new Error("the type's concurrencyKey returned a string Postgres cannot store")
  if (key === UNKEYED) throw new Error(`the type's concurrencyKey returned ${UNKEYED}, which is reserved for rows written without a key`)
  return key
}

const UNLIMITED = 2_147_483_647

export type LimitedClaimOptions = ClaimOptions & {
  type: string
  limits: TypeLimit
  /**
   * In place of maxPriority, a bound read by the claim itself: a query of at most one row (priority, due,
   * id), and the claim takes only rows ahead of it in that order (none: no bound). The hand-off's
   * (handoff.ts, otherHeadsBound): a freed slot goes to the type's next job only if no other work of the
   * worker comes first in the order a claim round would give the slot.
   */
  headBound?: SQL
}

/**
 * Claims up to `limit` due jobs of one limited type, within its limits, taken in (priority, due, id) order
 * among the rows its limits let start (each key gives at most its free slots).
 *
 * Finding them, for a keyed type: first a window, the type's first windowRows(limit) due rows in that order
 * (worker_jobs_limited_head_idx, one descent per priority in use), keeping those whose key has room. That
 * answer is exact when it takes all the type may start, or when the window held every due row, or when it
 * reached a row past the claim's priority bound that may start; then the claim costs the window, whatever
 * the number of keys. Otherwise (the window was all rows of keys already full: one wallet's long backlog
 * in front, or every key busy) a wider window (WIDE_WINDOW_ROWS) takes the rest, and if it too is cut
 * short, a walk of every key with pending rows (a loose index scan of worker_jobs_limited_idx, one descent
 * per key). The walk alone cost one descent per key on every claim: 790 ms with 100,000 keys, under the
 * type's lock, so every claim of the type in the cluster waited behind it. A type-wide limit has one key
 * (''), so it takes the walk directly.
 *
 * Rates: a rate-limited type logs every start in worker_rate_starts, and a slot is free while fewer than
 * `max` starts lie inside the window that ends now (a sliding log: never more than `max` in any window,
 * unlike a token bucket, which lets twice that through around a refill). "Now" is the clock read after
 * the advisory lock is taken, and the same value stamps `started` and the log, so a claim that waited on
 * the lock can never count itself into a window that has already moved on. When a rate held jobs back,
 * `retryInMs` is how long after the claim's clock the oldest start leaves the window: the worker looks again then.
 */
export async function claimLimited(
  db: Database,
  opts: ClaimOptions & { type: string; limits: TypeLimit },
): Promise<{ jobs: WorkerJob[]; retryInMs: number | null; moreBeyondBound: boolean }> {
  // The lock, the prune and the claim are sent together (each statement's snapshot is taken after the one
  // before it ran, so the claim sees every claim committed before the lock was granted).
  const claim = async (statement: SQL) => (await pipelinedTransaction(db, [...limitedPrelude(opts), statement])).at(-1)!
  if (!isKeyed(opts.limits)) {
    const rows = await claim(limitedClaimStatement(opts))
    return limitedResult(decodeClaimed(rows, opts), rows)
  }
  // A window, then a wider one, then the walk of every key: each in a transaction of its own under the same
  // lock, taking only what the ones before left (it counts their claims, committed, as running, and their
  // rate starts as logged).
  let jobs: WorkerJob[] = []
  for (const rows of [windowRows(opts.limit), WIDE_WINDOW_ROWS]) {
    const got = await claim(windowClaimStatement({ ...opts, limit: opts.limit - jobs.length }, rows))
    jobs = jobs.concat(decodeClaimed(got, opts))
    if (got[0]?.exact === true) return limitedResult(jobs, got)
  }
  const rest = await claim(limitedClaimStatement({ ...opts, limit: opts.limit - jobs.length }))
  return limitedResult(jobs.concat(decodeClaimed(rest, opts)), rest)
}

/**
 * The statements every limited claim of a type starts its transaction with: the type's advisory lock (the
 * claims of one type are serialised across the cluster), and for a rate-limited type the prune of its
 * start log. The hand-off (handoff.ts) sends them too.
 */
export function limitedPrelude(opts: { type: string; limits: TypeLimit }): SQL[] {
  const { rate, keyRate } = opts.limits
  // With the lock, for this transaction only: no bitmap scans. The running count reads the running-lease
  // index, where every finished job leaves a dead entry until vacuum. A plain index scan marks the dead
  // entries it meets so the next scan skips them; a bitmap scan never does, and the planner chose one
  // after a flood: each claim then re-read the flood's 100,000 entries and their heap pages (8 ms a claim,
  // tripling the gap between a limit-1 type's jobs until autovacuum came).
  const lock = sql`SELECT pg_advisory_xact_lock(hashtextextended(${`worker_jobs.limit:${opts.type}`}, 0)), set_config('enable_bitmapscan', 'off', true)`
  const prune =
    rate !== null || keyRate !== null
      ? [sql`DELETE FROM worker_rate_starts WHERE type = ${opts.type} AND at <= clock_timestamp() - make_interval(secs => ${Math.max(rate?.perMs ?? 0, keyRate?.perMs ?? 0) / 1000})`]
      : []
  return [lock, ...prune]
}

/**
 * The first claim statement of claimLimited, for the hand-off: the walk for a type-wide limit (always
 * exact), the window for a keyed type (its `exact` column says whether claimLimited would look further).
 */
export const firstLimitedClaim = (opts: LimitedClaimOptions): SQL =>
  isKeyed(opts.limits) ? windowClaimStatement(opts) : limitedClaimStatement(opts)

export function limitedResult(jobs: WorkerJob[], rows: Record<string, unknown>[]) {
  const retryInMs = rows[0]?.retry_in_ms
  return {
    jobs,
    retryInMs: retryInMs === null || retryInMs === undefined ? null : Number(retryInMs),
    moreBeyondBound: rows[0]?.beyond_bound === true,
  }
}

/** Whether the type's limits are per key (its claim looks at keys, not only at the type). */
export const isKeyed = (limits: TypeLimit) => limits.perKey !== null || limits.keyRate !== null

/** How many due rows the window of a keyed claim reads: a few times what it may take, within bounds. */
export const windowRows = (limit: number) => Math.min(1000, Math.max(64, 4 * limit))
/**
 * The second window, when the first was all rows of keys already full (every key busy, a worker with
 * several free slots, and the freed key's next row the only one with room): a few ms under the lock,
 * against one descent per key for the walk.
 */
export const WIDE_WINDOW_ROWS = 8_000

/**
 * The pieces both statements share: the running rows per key, what the type and a key may still start,
 * the claim of the picked rows with its rate log, and the columns the caller reads.
 */
function limitParts(opts: LimitedClaimOptions) {
  const { rate, keyRate } = opts.limits
  const perKey = opts.limits.perKey ?? UNLIMITED
  const typeCap = opts.limits.concurrency ?? UNLIMITED
  const logged = rate !== null || keyRate !== null
  const windowOf = (r: RateLimit | null) => sql`make_interval(secs => ${(r?.perMs ?? 0) / 1000})`
  // The claim takes rows up to this priority; `beyond_bound` says whether its limits would have let it
  // start any past it (heads are each key's first rows within its limits, whatever their priority).
  const maxPriority = sql`${opts.maxPriority ?? MAX_PRIORITY}::int`
  // Over a row of `heads` (id, priority, due): within the bound, or past it.
  const inBound = opts.headBound
    ? sql`(NOT EXISTS (SELECT 1 FROM bound) OR (priority, due, id) < (SELECT b.priority, b.due, b.id FROM bound AS b))`
    : sql`priority <= ${maxPriority}`
  const pastBound = sql`NOT ${inBound}`
  // Each rate is a count of the starts inside its window; a type without that rate counts nothing.
  const typeStarts = rate
    ? sql`(SELECT count(*)::int FROM worker_rate_starts, clock WHERE type = ${opts.type} AND at > clock.t - ${windowOf(rate)})`
    : sql`0`
  // When the oldest start in a window leaves it. The starts this claim logs are not visible to the
  // statement that writes them, so they count through `claimed` (they are all at clock.t).
  const nextFree = (r: RateLimit | null) =>
    r
      ? sql`(least(
          (SELECT min(at) FROM worker_rate_starts, clock WHERE type = ${opts.type} AND at > clock.t - ${windowOf(r)}),
          (SELECT clock.t FROM clock WHERE EXISTS (SELECT 1 FROM claimed))) + ${windowOf(r)})`
      : sql`NULL::timestamptz`
  // What the type as a whole may still start in this claim. Each key's rows are capped by it too: a key
  // can never give more rows than the claim keeps, and without the cap a type-wide limit (every row under
  // the one key '') read and sorted its whole due backlog on every claim, under the type's lock.
  const typeFree = sql`least(
        ${opts.limit}::int,
        ${typeCap}::int - (SELECT coalesce(sum(n), 0)::int FROM running),
        ${rate?.max ?? UNLIMITED}::int - ${typeStarts})`
  return {
    /** The first CTEs: the claim's clock, and the type's running rows per key. */
    head: sql`clock AS MATERIALIZED (SELECT clock_timestamp() AS t),${
      opts.headBound ? sql`
    bound AS MATERIALIZED (${opts.headBound}),` : sql``
    }
    running AS (
      SELECT concurrency_key AS k, count(*)::int AS n FROM worker_jobs WHERE ${RUNNING} AND type = ${opts.type} GROUP BY concurrency_key
    )`,
    typeFree,
    pastBound,
    /** How many more rows key `k` may start (its running rows are `n`); `k` is not the unkeyed bucket. */
    keyRoom: (k: SQL, n: SQL) => {
      const keyStarts = keyRate
        ? sql`(SELECT count(*)::int FROM worker_rate_starts, clock WHERE type = ${opts.type} AND key = ${k} AND at > clock.t - ${windowOf(keyRate)})`
        : sql`0`
      return sql`greatest(0, least(${perKey}::int - coalesce(${n}, 0), ${keyRate?.max ?? UNLIMITED}::int - ${keyStarts}, ${typeFree}))`
    },
    keyed: isKeyed(opts.limits) ? (k: SQL) => sql` AND ${k} <> ${UNKEYED}` : () => sql``,
    /** `picked` from the `heads` CTE, the claim, and the columns (plus `extra`). */
    tail: (extra?: SQL) => sql`picked AS MATERIALIZED (
      SELECT id FROM heads
      WHERE ${inBound}
      ORDER BY priority, due, id
      LIMIT greatest(0, ${typeFree})
    ), ${claimedJobsSelect(opts, sql`picked`, {
      at: sql`(SELECT t FROM clock)`,
      ctes: logged
        ? sql`starts AS (INSERT INTO worker_rate_starts (type, key, at) SELECT type, concurrency_key, started FROM claimed)`
        : undefined,
      // As a delay from the claim's own clock, not a time: a server whose clock runs ahead of the
      // database's would otherwise wake early and claim in vain every few ms until its clock caught up.
      columns: sql`EXISTS (SELECT 1 FROM heads WHERE ${pastBound}) AS beyond_bound${
        logged ? sql`, extract(epoch FROM least(${nextFree(rate)}, ${nextFree(keyRate)}) - (SELECT t FROM clock)) * 1000 AS retry_in_ms` : sql``
      }${extra ? sql`, ${extra}` : sql``}`,
    })}`,
  }
}

/**
 * The walk of every key with pending rows, to run under the type's advisory lock (exported for the tests
 * that read its plan). Each key contributes at most its free slots, taken in (priority, due, id) order;
 * the heads of all keys are then merged in that order up to the type's free slots.
 */
export function limitedClaimStatement(opts: LimitedClaimOptions): SQL {
  const p = limitParts(opts)
  return sql`
    WITH RECURSIVE ${p.head},
    keys AS (
      (SELECT concurrency_key AS k FROM worker_jobs
       WHERE ${LIMITED_PENDING} AND type = ${opts.type} ORDER BY concurrency_key LIMIT 1)
      UNION ALL
      SELECT (SELECT w.concurrency_key FROM worker_jobs AS w
              WHERE ${LIMITED_PENDING} AND w.type = ${opts.type} AND w.concurrency_key > keys.k ORDER BY w.concurrency_key LIMIT 1)
      FROM keys WHERE keys.k IS NOT NULL
    ), heads AS (
      SELECT x.id, x.priority, x.due FROM keys
      LEFT JOIN running AS r ON r.k = keys.k
      CROSS JOIN LATERAL (
        SELECT id, priority, due FROM worker_jobs
        WHERE ${LIMITED_PENDING} AND type = ${opts.type} AND concurrency_key = keys.k AND due <= now()
        ORDER BY priority, due, id
        LIMIT ${p.keyRoom(sql`keys.k`, sql`r.n`)}
      ) AS x
      WHERE keys.k IS NOT NULL${p.keyed(sql`keys.k`)}
    ), ${p.tail()}`
}

/**
 * The window of a keyed claim (see claimLimited), to run under the type's advisory lock (exported for the
 * tests). `win` is the type's first windowRows(limit) due rows in (priority, due, id) order: the distinct
 * priorities of its pending rows lowest first (one descent each of worker_jobs_limited_head_idx), and for
 * each the due rows in (due, id) order. No ORDER BY above the LATERAL: the recursion yields priorities in
 * order and the nested loop keeps it, so LIMIT stops the scan (as the common claim's picked CTE does). Each
 * key keeps its first rows up to its room. `exact` says whether the answer is the walk's (see claimLimited).
 */
export function windowClaimStatement(opts: LimitedClaimOptions, rows = windowRows(opts.limit)): SQL {
  const p = limitParts(opts)
  return sql`
    WITH RECURSIVE ${p.head},
    ${limitedPriorities(opts.type)}, win AS MATERIALIZED (
      SELECT x.id, x.k, x.priority, x.due FROM lp CROSS JOIN LATERAL (
        SELECT id, concurrency_key AS k, priority, due FROM worker_jobs
        WHERE ${LIMITED_PENDING} AND type = ${opts.type} AND priority = lp.priority AND due <= now()
        ORDER BY due, id
        LIMIT ${rows}::int
      ) AS x
      WHERE lp.priority IS NOT NULL
      LIMIT ${rows}::int
    ), heads AS (
      SELECT w.id, w.priority, w.due FROM (
        SELECT win.*, row_number() OVER (PARTITION BY win.k ORDER BY win.priority, win.due, win.id) AS nth FROM win
      ) AS w
      LEFT JOIN running AS r ON r.k = w.k
      WHERE w.nth <= ${p.keyRoom(sql`w.k`, sql`r.n`)}${p.keyed(sql`w.k`)}
    ), ${p.tail(sql`(
      (SELECT count(*) FROM win) < ${rows}::int
      OR (SELECT count(*) FROM picked) >= ${p.typeFree}
      OR EXISTS (SELECT 1 FROM heads WHERE ${p.pastBound})
    ) AS exact`)}`
}

/**
 * The distinct priorities of a limited type's pending rows, lowest first, as a recursive CTE named `lp`
 * (one descent of worker_jobs_limited_head_idx each; a NULL row ends it): the window claim and the
 * hand-off (handoff.ts) walk the type's due rows priority by priority from it.
 */
export function limitedPriorities(type: string): SQL {
  return sql`lp AS (
      (SELECT priority FROM worker_jobs WHERE ${LIMITED_PENDING} AND type = ${type} ORDER BY priority LIMIT 1)
      UNION ALL
      SELECT (SELECT w.priority FROM worker_jobs AS w
              WHERE ${LIMITED_PENDING} AND w.type = ${type} AND w.priority > lp.priority ORDER BY w.priority LIMIT 1)
      FROM lp WHERE lp.priority IS NOT NULL
    )`
}

/** The pending rows of limited types, exactly worker_jobs_limited_idx's predicate. */
export const LIMITED_PENDING = sql.raw(LIMITED_PENDING_TEXT)

/** Wakes every worker (the insert trigger's channel, due now): a limited type's slot was freed. */
export async function announceFreedSlots(db: Executor): Promise<void> {
  await runQuery(db, sql`SELECT pg_notify(${JOBS_CHANNEL}, floor(extract(epoch FROM now()) * 1000)::bigint::text)`)
}

/** The earliest future due time among the pending rows of limited types (for the due timer), or null. */
export async function nextLimitedDue(db: Executor, types: readonly string[]): Promise<Date | null> {
  if (types.length === 0) return null
  const rows = await runQuery(
    db,
    sql`SELECT extract(epoch FROM min(due))::float8 * 1000 AS due_ms FROM worker_jobs
        WHERE ${LIMITED_PENDING} AND type = ANY(${textArray(types)}) AND due > now()`,
  )
  const due = rows[0]?.due_ms
  return typeof due === 'number' ? new Date(due) : null
}
