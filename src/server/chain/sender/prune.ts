import { sql } from 'drizzle-orm'
import type { Executor } from '../../db/client'
import { deleteInBatches } from '../../workers/queue/cleanup'

/** How long a settled send's record is kept after it settled: an audit trail of what the server signed. */
export const SETTLED_SEND_RETENTION_MS = 7 * 24 * 3600_000

/**
 * Deletes the send records nobody can need again: settled (mined or superseded) longer than `retentionMs`
 * ago, of a job that is finished or gone (a finished job never runs again under its id; a rerun is a new
 * job with new step keys). Their attempts in chain_sent_txs go with them (ON DELETE CASCADE), and so do
 * the attempts left without a send (funding rows written before the sender existed) once as old.
 *
 * Why it is safe for the nonces: the wallet's counter lives in chain_nonces, and gap filling reads only
 * pending sends; a pending send is never deleted, however old.
 */
export async function pruneSettledSends(db: Executor, opts: { retentionMs?: number; batchSize?: number; signal?: AbortSignal } = {}): Promise<number> {
  const cutoff = sql`now() - make_interval(secs => ${(opts.retentionMs ?? SETTLED_SEND_RETENTION_MS) / 1000})`
  const sends = await deleteInBatches(db, opts, (limit) => sql`
    DELETE FROM chain_sends WHERE id IN (
      SELECT s.id FROM chain_sends s
      WHERE s.state <> 'pending' AND s.settled_at < ${cutoff}
        AND NOT EXISTS (SELECT 1 FROM worker_jobs j WHERE j.id = s.job_id AND j.finished IS NULL)
      LIMIT ${limit}
      FOR UPDATE OF s SKIP LOCKED
    )
    RETURNING id`)
  await deleteInBatches(db, opts, (limit) => sql`
    DELETE FROM chain_sent_txs WHERE id IN (
      SELECT id FROM chain_sent_txs WHERE send_id IS NULL AND settled_at < ${cutoff} LIMIT ${limit} FOR UPDATE SKIP LOCKED
    )
    RETURNING id`)
  return sends
}
