import { type SQL, sql } from 'drizzle-orm'
import type { Executor } from '../../db/client'

/**
 * Deletes finished, non-persistent jobs whose remove_at has passed, `batchSize` rows per statement so a
 * large backlog never holds one huge lock or transaction. Rows still pending or running are never touched.
 * Why the inner SELECT … FOR UPDATE SKIP LOCKED: a row being read by an inspector or updated elsewhere is
 * left for the next run instead of blocking this one.
 */
export async function deleteExpiredJobs(
  db: Executor,
  opts: { batchSize?: number; signal?: AbortSignal } = {},
): Promise<number> {
  return deleteInBatches(db, opts, (limit) => sql`
      DELETE FROM worker_jobs WHERE id IN (
        SELECT id FROM worker_jobs
        WHERE finished IS NOT NULL AND persistent = false AND remove_at < now()
        ORDER BY remove_at
        LIMIT ${limit}
        FOR UPDATE SKIP LOCKED
      )
      RETURNING id`)
}

/**
 * Runs a `DELETE … LIMIT n … RETURNING` statement again until it deletes fewer than `batchSize` rows,
 * each batch in its own statement (no huge lock or transaction); returns how many it deleted in all.
 */
export async function deleteInBatches(
  db: Executor,
  opts: { batchSize?: number; signal?: AbortSignal },
  statement: (limit: number) => SQL,
): Promise<number> {
  const batchSize = opts.batchSize ?? 10_000
  let total = 0
  for (;;) {
    opts.signal?.throwIfAborted()
    const rows = await db.execute(statement(batchSize))
    total += rows.length
    if (rows.length < batchSize) return total
  }
}
