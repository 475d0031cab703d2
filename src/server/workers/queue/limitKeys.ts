import { sql } from 'drizzle-orm'
import { type Executor, runQuery } from '../../db/client'
import type { Job, JobRegistry } from '../jobs/types'
import { concurrencyKeyOf, LIMITED_PENDING, limitedTypes, UNKEYED } from './limits'
import { bigintArray, textArray } from './params'
import { PENDING } from './states'
import { SERVER_STALE_MS } from './servers'

/** Rows keyed per pass; a larger backlog is taken on the next call. */
const BATCH = 1_000

/**
 * Keeps every pending row's concurrency_key right for the registry, the one owner of that repair (the
 * key a submit gives is concurrencyKeyOf's). Rows can be wrong in three ways, all from outside this
 * server's submit: written without a key (psql, a script, an older server: the insert trigger gives them
 * UNKEYED), keyed for a limit that was removed (a rescued row, a cron successor, a row an old server
 * wrote during a deploy), or, at a first boot with a new limit, written before any server knew it.
 *
 * Called at boot (`boot`: every case) and with every announce (the cheap cases, inside the announce's
 * own transaction, so an idle server's load does not grow): each case is one index probe when there is
 * nothing to do.
 * - UNKEYED rows of a keyed type get the key the type's function gives their data, parsed by its
 *   dataSchema as at submit. Data the schema refuses gets '' (the run fails on that data before its
 *   handler is called); valid data the key function refuses fails the row, naming why: run under a
 *   guessed key it could race another job of its real key.
 * - Rows of a type that is not limited here and that no live server lists as limited lose their key, so
 *   the common claim takes them. While an older server still limits the type, its own claim does.
 * - At boot only: rows of a limited type with no key at all (the claim index walked to find them), and
 *   '' rows of a keyed type (what the trigger gave hand-written rows before UNKEYED) are keyed again.
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
          WHERE ${LIMITED_PENDING} AND type = ANY(${textArray(unlimited)})
            AND NOT EXISTS (SELECT 1 FROM worker_servers
                            WHERE worker_jobs.type = ANY(limited_types)
                              AND last_seen_at >= now() - make_interval(secs => ${SERVER_STALE_MS / 1000}))
          RETURNING id`,
    )
    moved += freed.length
  }
  for (const type of limited) {
    const def = registry[type]!
    const keyed = def.concurrencyKey !== undefined
    const which = opts.boot
      ? keyed
        ? sql`(concurrency_key IS NULL OR concurrency_key IN ('', ${UNKEYED}))`
        : sql`concurrency_key IS NULL`
      : keyed
        ? sql`concurrency_key = ${UNKEYED}`
        : null
    if (!which) continue
    // Keyset pages: a row keyed again to '' still matches `which` at boot, and must not be read twice.
    for (let after = 0; ; ) {
      const batch = await runQuery(
        db,
        sql`SELECT id, data FROM worker_jobs WHERE ${PENDING} AND type = ${type} AND ${which} AND id > ${after} ORDER BY id LIMIT ${BATCH}`,
      )
      if (batch.length === 0) break
      after = Number(batch.at(-1)!.id)
      const byKey = new Map<string, number[]>()
      const refused = new Map<string, number[]>()
      for (const r of batch) {
        const k = storedRowKey(def, r.data)
        const into = 'key' in k ? byKey : refused
        const at = 'key' in k ? k.key : k.error
        into.set(at, [...(into.get(at) ?? []), Number(r.id)])
      }
      for (const [key, ids] of byKey) {
        const rows = await runQuery(
          db,
          sql`UPDATE worker_jobs SET concurrency_key = ${key}, updated_at = now()
              WHERE id = ANY(${bigintArray(ids)}) AND ${PENDING} AND concurrency_key IS DISTINCT FROM ${key} RETURNING id`,
        )
        moved += rows.length
      }
      for (const [error, ids] of refused) {
        const rows = await runQuery(
          db,
          sql`UPDATE worker_jobs SET finished = now(), success = false, updated_at = now(),
                remove_at = now() + make_interval(secs => remove_delay), result = jsonb_build_object('error', ${error}::text)
              WHERE id = ANY(${bigintArray(ids)}) AND ${PENDING} RETURNING id`,
        )
        failed.push(...rows.map((r) => Number(r.id)))
      }
      if (batch.length < BATCH || !opts.boot) break
    }
  }
  return { moved, failed }
}

/** The key of a stored row's data, as a submit of that data would compute it; or why there is none. */
function storedRowKey(def: Job, data: unknown): { key: string } | { error: string } {
  const parsed = def.dataSchema.safeParse(data ?? {})
  // Its run fails on this data before the handler is called, so no key can be raced.
  if (!parsed.success) return { key: '' }
  try {
    return { key: concurrencyKeyOf(def, parsed.data) ?? '' }
  } catch (err) {
    return { error: `written without a concurrency key, and none can be computed from its data: ${(err as Error).message}` }
  }
}
