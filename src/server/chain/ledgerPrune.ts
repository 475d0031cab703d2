import { sql } from 'drizzle-orm'
import type { Executor } from '../db/client'
import { deleteInBatches } from '../workers/queue/cleanup'

/**
 * Deletes the chain_events rows that nothing needs any more: below every chain's reorg window (cursor −
 * maxReorgDepth, where a rewind can never reach) and referenced by no row of any table with a foreign key
 * to chain_events (notifications, or a custom handler's table). Such a row lost what it was kept for,
 * e.g. its notifications were deleted with their user. Logs that no handler acted on never get a row
 * (cursorStore.commitRange), so this only collects those orphans. Bounded batches, as deleteExpiredJobs.
 *
 * Why the referencing tables are read from the catalog: a handler may add its own table referencing
 * chain_events, and a prune that knew only notifications would cascade-delete that table's rows.
 */
export async function pruneChainLedger(db: Executor, opts: { maxReorgDepth: number; batchSize?: number; signal?: AbortSignal }): Promise<number> {
  const refs = await db.execute<{ tbl: string; col: string }>(sql`
    SELECT c.conrelid::regclass::text AS tbl, a.attname AS col
    FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
    WHERE c.contype = 'f' AND c.confrelid = 'chain_events'::regclass`)
  // Identifiers from the catalog (regclass text is already quoted where needed), never from input.
  const unreferenced = refs.map((r) => sql`AND NOT EXISTS (SELECT 1 FROM ${sql.raw(r.tbl)} x WHERE x.${sql.identifier(r.col)} = e.id)`)
  return deleteInBatches(db, opts, (limit) => sql`
      DELETE FROM chain_events WHERE id IN (
        SELECT e.id FROM chain_events e JOIN chain_cursors c ON c.chain_id = e.chain_id
        WHERE e.block_number < c.block_number - ${opts.maxReorgDepth} ${sql.join(unreferenced, sql` `)}
        LIMIT ${limit}
        FOR UPDATE OF e SKIP LOCKED
      )
      RETURNING id`)
}
