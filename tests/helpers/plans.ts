import { type SQL, sql } from 'drizzle-orm'
import type postgres from 'postgres'
import type { Database } from '../../src/server/db/client'

/**
 * Reading what Postgres does with a statement, for the tests that hold a statement to an index:
 * its plan (EXPLAIN), the plan's sequential scans of worker_jobs, and the table's scan counter.
 */

/** The statement's plan; with `analyze`, EXPLAIN (ANALYZE, BUFFERS) in a transaction rolled back. */
export async function planOf(db: Database, statement: SQL, opts: { analyze?: boolean } = {}): Promise<any> {
  if (!opts.analyze) {
    const [row] = (await db.execute(sql`EXPLAIN (FORMAT JSON) ${statement}`)) as unknown as any[]
    return row['QUERY PLAN'][0].Plan
  }
  let plan: any
  await db
    .transaction(async (tx) => {
      ;[plan] = (await tx.execute(sql`EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${statement}`)) as unknown as any[]
      throw new Error('rollback')
    })
    .catch((e) => {
      if (e.message !== 'rollback') throw e
    })
  return plan['QUERY PLAN'][0].Plan
}

/** The plan nodes that read worker_jobs sequentially. */
export function seqScansOfJobs(node: any): any[] {
  const own = node['Node Type'] === 'Seq Scan' && node['Relation Name'] === 'worker_jobs' ? [node] : []
  return own.concat(...(node.Plans ?? []).map(seqScansOfJobs))
}

/**
 * Sequential scans of worker_jobs so far, as Postgres counts them. Backends flush their counters at the
 * end of a statement, and a session caches what it read: read it on the connection that ran the
 * statements under test (the flush covers that backend only).
 */
export async function seqScanCount(client: postgres.Sql): Promise<number> {
  await client`SELECT pg_stat_force_next_flush()`
  await client`SELECT 1`
  await client`SELECT pg_stat_clear_snapshot()`
  const [row] = await client`SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'worker_jobs'`
  return Number(row!.seq_scan)
}

/**
 * Index entries each index of worker_jobs has returned so far (idx_tup_read), by name. Backends flush their
 * counters lazily: `d` must be the single connection that ran the statements under test (createDb with max 1).
 */
export async function indexTuplesRead(d: Database): Promise<Record<string, number>> {
  await d.execute(sql`SELECT pg_stat_force_next_flush()`)
  await d.execute(sql`SELECT pg_stat_clear_snapshot()`)
  const rows = (await d.execute(
    sql`SELECT indexrelname AS name, idx_tup_read AS n FROM pg_stat_user_indexes WHERE relname = 'worker_jobs'`,
  )) as unknown as { name: string; n: string }[]
  return Object.fromEntries(rows.map((r) => [r.name, Number(r.n)]))
}
