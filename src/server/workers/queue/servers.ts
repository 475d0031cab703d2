import { sql } from 'drizzle-orm'
import { type Database, type Executor, runQuery } from '../../db/client'
import { textArray } from './params'

/** A server that has not refreshed its row for this long counts as gone (its row is deleted). */
export const SERVER_STALE_MS = 30_000

/**
 * Records (or refreshes) this server in worker_servers with the job types it registers, and drops the rows
 * of servers that stopped refreshing theirs. Called by each manager every few seconds.
 */
export async function announceServer(
  db: Executor,
  server: { id: string; hostname: string; pid: number; jobTypes: readonly string[]; limitedTypes?: readonly string[]; workers?: unknown },
): Promise<void> {
  const workers = JSON.stringify(server.workers ?? [])
  await runQuery(
    db,
    sql`INSERT INTO worker_servers (id, hostname, pid, job_types, limited_types, workers)
        VALUES (${server.id}, ${server.hostname}, ${server.pid}, ${textArray(server.jobTypes)}, ${textArray(server.limitedTypes ?? [])}, ${workers}::text::jsonb)
        ON CONFLICT (id) DO UPDATE SET job_types = EXCLUDED.job_types, limited_types = EXCLUDED.limited_types, workers = EXCLUDED.workers, last_seen_at = now()`,
  )
  await runQuery(db, sql`DELETE FROM worker_servers WHERE last_seen_at < now() - make_interval(secs => ${SERVER_STALE_MS / 1000})`)
}

export async function retireServer(db: Database, id: string): Promise<void> {
  await runQuery(db, sql`DELETE FROM worker_servers WHERE id = ${id}`)
}
