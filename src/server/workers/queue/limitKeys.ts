import { sql } from 'drizzle-orm'
import { type Executor, runQuery } from '../../db/client'
import type { Job, JobRegistry } from '../jobs/types'
import { announceFreedSlots, concurrencyKeyOf, LIMITED_PENDING, limitedTypes, UNKEYED } from './limits'
import { bigintArray, textArray } from './params'
import { PENDING } from './states'
import { SERVER_STALE_MS } from './servers'

/** Rows repaired per statement; a larger backlog is taken by the next announce (or the next boot batch). */
const BATCH = 1_000

/**
 * Keeps every pending row's concurrency_key right for the registry, the one owner of that repair (the
 * key a submit gives is concurrencyKeyOf's). Rows can be wrong in three ways, all from outside this
 * server's submit: written without a key (psql, a script, an older server: the insert trigger gives them
 * UNKEYED), keyed for a limit that was removed (a rescued row, a cron successor, a row an old server
 * wrote during a deploy), or, at a first boot with a new limit, written before any server knew it.
 *
 * Called at boot (`boot`: every case, every batch) and with every announce (the cheap cases, one batch
 * each, inside the announce's own transaction so an idle server's load does not grow): each case is one
 * index probe when there is nothing to do.
 * - UNKEYED rows of a keyed type get the key the type's function gives their data, parsed by its
 *   dataSchema as at submit. Data the schema refuses gets '' (the run fails on that data before its
 *   handler is called); data the schema or the key function throws on fails the row, naming why: run
 *   under a guessed key it could race another job of its real key.
 * - Rows of a type that is not limited here and that no live server lists as limited lose their key, so
 *   the common claim takes them. While an older server still limits the type, its own claim does.
 * - At boot only: rows of a limited type with no key at all (the claim index walked to find them), and
 *   '' rows of a keyed type (what the trigger gave hand-written rows before UNKEYED) are keyed again.
 *
 * Rows are locked with SKIP LOCKED: a claim taking one right now wins, and two servers repairing at once
 * (whose key functions may differ during a deploy) never wait on or deadlock with each other. A repaired
 * row is announced like a freed slot, or every worker that skipped it would wait for its poll.
 */
export async function reconcileLimitKeys(db: Executor, registry: JobRegistry, opts: { boot: boolean }): Promise<{ moved: number; failed: number[] }> {
  let moved = 0
  const failed: number[] = []
  const limited = limitedTypes(registry)
  const unlimited = Object.keys(registry).filter((t) => !limited.includes(t))
  if (unlimited.length > 0) {
    const freed = await runQuery(
      db,
      sql`UPDATE worker_jobs SET concurrency_key = NULL, updated_at = now()
          WHERE id IN (
            SELECT id FROM worker_jobs
            WHERE ${LIMITED_PENDING} AND type = ANY(${textArray(unlimited)})
              AND NOT EXISTS (SELECT 1 FROM worker_servers
                              WHERE worker_jobs.type = ANY(limited_types)
                                AND last_seen_at >= now() - make_interval(secs => ${SERVER_STALE_MS / 1000}))
            LIMIT ${BATCH} FOR UPDATE SKIP LOCKED)
          RETURNING id`,
    )
    moved += freed.length
  }
  for (const type of limited) {
    const def = registry[type]!
    const keyed = def.concurrencyKey !== undefined
    if (!opts.boot && !keyed) continue
    const which = opts.boot
      ? keyed
        ? sql`(concurrency_key IS NULL OR concurrency_key IN ('', ${UNKEYED}))`
        : sql`concurrency_key IS NULL`
      : sql`concurrency_key = ${UNKEYED}`
    // At boot, keyset pages: a row keyed again to '' still matches `which`, and must not be read twice.
    // The announce's pass reads UNKEYED rows only (worker_jobs_limited_idx finds them), which its repair
    // takes out of that set.
    for (let after = 0; ; ) {
      const batch = await runQuery(
        db,
        opts.boot
          ? sql`SELECT id, data FROM worker_jobs WHERE ${PENDING} AND type = ${type} AND ${which} AND id > ${after} ORDER BY id LIMIT ${BATCH}`
          : sql`SELECT id, data FROM worker_jobs WHERE ${LIMITED_PENDING} AND type = ${type} AND ${which} LIMIT ${BATCH}`,
      )
      if (batch.length === 0) break
      after = Number(batch.at(-1)!.id)
      const keyed: { id: number; key: string }[] = []
      const refused: { id: number; error: string }[] = []
      for (const r of batch) {
        const k = storedRowKey(def, r.data)
        if ('key' in k) keyed.push({ id: Number(r.id), key: k.key })
        else refused.push({ id: Number(r.id), error: k.error })
      }
      moved += await setKeys(db, keyed)
      failed.push(...(await failRefused(db, refused)))
      if (batch.length < BATCH || !opts.boot) break
    }
  }
  if (moved > 0) await announceFreedSlots(db)
  return { moved, failed }
}

/** One statement for the whole batch: each row gets its key, unless it is no longer pending (or locked). */
async function setKeys(db: Executor, rows: readonly { id: number; key: string }[]): Promise<number> {
  if (rows.length === 0) return 0
  const done = await runQuery(
    db,
    sql`UPDATE worker_jobs AS j SET concurrency_key = v.key, updated_at = now()
        FROM unnest(${bigintArray(rows.map((r) => r.id))}, ${textArray(rows.map((r) => r.key))}) AS v(id, key)
        WHERE j.id = v.id AND j.concurrency_key IS DISTINCT FROM v.key
          AND j.id IN (SELECT id FROM worker_jobs WHERE id = ANY(${bigintArray(rows.map((r) => r.id))}) AND ${PENDING} FOR UPDATE SKIP LOCKED)
        RETURNING j.id`,
  )
  return done.length
}

/** Fails the rows whose data gives no key, each with its reason; returns those failed. */
async function failRefused(db: Executor, rows: readonly { id: number; error: string }[]): Promise<number[]> {
  if (rows.length === 0) return []
  const done = await runQuery(
    db,
    sql`UPDATE worker_jobs AS j SET finished = now(), success = false, updated_at = now(),
          remove_at = now() + make_interval(secs => j.remove_delay), result = jsonb_build_object('error', v.error)
        FROM unnest(${bigintArray(rows.map((r) => r.id))}, ${textArray(rows.map((r) => r.error))}) AS v(id, error)
        WHERE j.id = v.id
          AND j.id IN (SELECT id FROM worker_jobs WHERE id = ANY(${bigintArray(rows.map((r) => r.id))}) AND ${PENDING} FOR UPDATE SKIP LOCKED)
        RETURNING j.id`,
  )
  return done.map((r) => Number(r.id))
}

/** The key of a stored row's data, as a submit of that data would compute it; or why there is none. */
function storedRowKey(def: Job, data: unknown): { key: string } | { error: string } {
  const why = (err: unknown) => ({ error: `written without a concurrency key, and none can be computed from its data: ${(err as Error)?.message ?? String(err)}` })
  let parsed: ReturnType<Job['dataSchema']['safeParse']>
  try {
    // A transform or refinement of the schema may throw (or be async) on data no submit would have let in.
    parsed = def.dataSchema.safeParse(data ?? {})
  } catch (err) {
    return why(err)
  }
  // Its run fails on this data before the handler is called, so no key can be raced.
  if (!parsed.success) return { key: '' }
  try {
    return { key: concurrencyKeyOf(def, parsed.data) ?? '' }
  } catch (err) {
    return why(err)
  }
}
