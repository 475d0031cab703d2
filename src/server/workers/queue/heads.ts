import { type SQL, sql } from 'drizzle-orm'
import { type Executor, runQuery } from '../../db/client'
import { PRIORITIES } from './claim'
import { textArray } from './params'
import { CLAIMABLE_TEXT, LIMITED_PENDING_TEXT } from './states'

/** The most urgent due row of a claim's rows: the first row that claim would take (in priority, due, id order). */
export interface Head {
  priority: number
  dueMs: number
  id: number
}

/** Where the next slots may go: the common claim, or the claim of one limited type. */
export type Source = { kind: 'common' } | { kind: 'limited'; type: string }

/**
 * The head of the common claim's rows (types without a limit) and of each limited type's rows, in one
 * statement, for the worker loop to give its free slots to the most urgent first (workerLoop.ts,
 * claimRound). A limited type's head ignores its limit: it may be held back, and then its claim takes
 * nothing and the slots go on to the next source.
 *
 * Each head is a loose index scan, as the claim's own (claim.ts, whose PRIORITIES it shares for the common
 * rows): one descent per distinct priority of the pending rows (worker_jobs_claim_idx, or
 * worker_jobs_limited_head_idx for a limited type), then one to the
 * first due row of that priority. Future-dated rows are never walked, so the cost is the number of
 * priorities in use, not the backlog.
 */
export async function dueHeads(
  db: Executor,
  commonTypes: readonly string[],
  limitedTypes: readonly string[],
): Promise<{ common: Head | null; limited: Map<string, Head> }> {
  const rows = await runQuery(db, sql`SELECT type, priority, extract(epoch FROM due)::float8 * 1000 AS due_ms, id FROM (${headsSelect(commonTypes, limitedTypes)}) AS h`)
  let common: Head | null = null
  const limited = new Map<string, Head>()
  for (const r of rows) {
    const head = { priority: Number(r.priority), dueMs: Number(r.due_ms), id: Number(r.id) }
    if (r.type === null) common = head
    else limited.set(String(r.type), head)
  }
  return { common, limited }
}

/**
 * The heads as rows (type: NULL for the common claim's, priority, due, id), for dueHeads and for the
 * hand-off's bound (otherHeadsBound).
 */
function headsSelect(commonTypes: readonly string[], limitedTypes: readonly string[]): SQL {
  const claimable = sql.raw(CLAIMABLE_TEXT)
  const limitedPending = sql.raw(LIMITED_PENDING_TEXT)
  // Without common types (a server whose every type is limited) that part is left out: its loose scan
  // would still walk the claim index to find nothing.
  const commonPart = sql`
    (SELECT NULL::text AS type, p.priority, x.due, x.id
     FROM priorities AS p CROSS JOIN LATERAL (
       SELECT due, id FROM worker_jobs
       WHERE ${claimable} AND priority = p.priority AND due <= now() AND type = ANY(${textArray(commonTypes)})
       ORDER BY due, id LIMIT 1
     ) AS x
     -- No ORDER BY: the recursion yields the priorities lowest first and the nested loop keeps that order,
     -- so LIMIT 1 stops at the first priority with a due row (as the claim's own picked CTE does). A sort
     -- would run every lateral first: 16 ms with 2,000 priorities in use instead of a fraction of one.
     WHERE p.priority IS NOT NULL
     LIMIT 1)
    UNION ALL`
  const withCommon = commonTypes.length > 0
  return sql`
    WITH RECURSIVE ${withCommon ? sql`${PRIORITIES}, ` : sql``}lp AS (
      SELECT t.type, (SELECT priority FROM worker_jobs WHERE ${limitedPending} AND type = t.type ORDER BY priority LIMIT 1) AS priority
      FROM unnest(${textArray(limitedTypes)}) AS t(type)
      UNION ALL
      SELECT lp.type, (SELECT w.priority FROM worker_jobs AS w
                       WHERE ${limitedPending} AND w.type = lp.type AND w.priority > lp.priority ORDER BY w.priority LIMIT 1)
      FROM lp WHERE lp.priority IS NOT NULL
    )
    ${withCommon ? commonPart : sql``}
    (SELECT DISTINCT ON (lp.type) lp.type, lp.priority, x.due, x.id
     FROM lp CROSS JOIN LATERAL (
       SELECT due, id FROM worker_jobs
       WHERE ${limitedPending} AND type = lp.type AND priority = lp.priority AND due <= now()
       ORDER BY due, id LIMIT 1
     ) AS x
     WHERE lp.priority IS NOT NULL
     ORDER BY lp.type, lp.priority)`
}

/**
 * The most urgent of the other claims' heads of a worker (the common claim's types and other limited
 * types), as a query of one row (priority, due, id), or none when nothing of theirs is due: the bound of
 * the hand-off's claim (handoff.ts), which takes only rows ahead of it in (priority, due, id) order, the
 * order a claim round gives slots in. Null when the worker has no other claim.
 */
export function otherHeadsBound(commonTypes: readonly string[], limitedTypes: readonly string[]): SQL | null {
  if (commonTypes.length === 0 && limitedTypes.length === 0) return null
  return sql`SELECT priority, due, id FROM (${headsSelect(commonTypes, limitedTypes)}) AS h ORDER BY priority, due, id LIMIT 1`
}
