import { afterAll, beforeAll, expect, test } from 'bun:test'
import type postgres from 'postgres'
import type { Database, DbHandle } from '../../src/server/db/client'
import { claimLimited, type TypeLimit } from '../../src/server/workers/queue/limits'
import { indexTuplesRead } from '../helpers/plans'
import { openTestDb } from '../helpers/testDb'

/**
 * After a flood of ordinary jobs, a limited claim does not keep re-reading the entries the flood left in
 * the running-lease index. Every finished job leaves one there until vacuum; the claim counts the type's
 * running rows through that index, and the planner chose a bitmap scan, which never marks dead entries
 * as such: each claim read them all again with their heap pages (8 ms a claim after 100,000 jobs, so the
 * gap between a limit-1 type's jobs tripled until autovacuum came). The claim now runs with bitmap scans
 * off, so the first scan marks the dead entries and the next ones skip them. Counted from the index's own
 * statistics, over claims made the way workers make them. (The planner's bitmap choice came from a real
 * flood's statistics, which this table does not reproduce: here the old claim chose a plain scan too, so
 * this test guards the property rather than reproducing the defect; bench/README.md has the measurement.)
 */
let t: Awaited<ReturnType<typeof openTestDb>>
let sql: postgres.Sql
let handle: DbHandle
const ROWS = 20_000

beforeAll(async () => {
  t = await openTestDb('limited_dead_entries', 1)
  ;({ sql, handle } = t)
})
afterAll(() => t.close())

const entriesRead = async (d: Database) => (await indexTuplesRead(d)).worker_jobs_running_lease_idx!

test('after 20,000 ordinary jobs ran, limited claims read none of the dead entries they left, claim after claim', async () => {
  await sql`INSERT INTO worker_jobs (type, data, concurrency_key) SELECT 'serial', '{}', '' FROM generate_series(1, 50)`
  await sql`INSERT INTO worker_jobs (type, data) SELECT 'noop', '{}' FROM generate_series(1, ${ROWS}::int)`
  // Claimed and finished in batches, as workers do; statistics taken mid-flood, as autoanalyze would.
  // By id, as workers write them (the primary key, never the running-lease index).
  const [first] = await sql`SELECT min(id)::int AS id FROM worker_jobs WHERE type = 'noop'`
  for (let batch = 0; batch < ROWS / 1000; batch++) {
    const from = first!.id + batch * 1000
    await sql`UPDATE worker_jobs SET started = now(), locked_by = 'w', lease_expires_at = now() + interval '1 minute'
              WHERE id BETWEEN ${from} AND ${from + 999}`
    if (batch === 10) await sql`ANALYZE worker_jobs`
    await sql`UPDATE worker_jobs SET finished = now(), success = true WHERE id BETWEEN ${from} AND ${from + 999}`
  }
  const limits: TypeLimit = { concurrency: 1, perKey: null, rate: null, keyRate: null }
  const opts = { workerId: 'w1', leaseMs: 60_000, limit: 1, types: ['serial'], type: 'serial', limits }
  const reads: number[] = []
  for (let i = 0; i < 5; i++) {
    const before = await entriesRead(handle.db)
    const got = await claimLimited(handle.db, opts)
    expect(got.jobs).toHaveLength(1)
    reads.push((await entriesRead(handle.db)) - before)
    // Its job finishes, freeing the slot for the next claim.
    await sql`UPDATE worker_jobs SET finished = now(), success = true WHERE id = ${got.jobs[0]!.id}`
  }
  // The first claim may meet the dead entries (and mark them); the ones after it must not read them again.
  expect(Math.max(...reads.slice(1))).toBeLessThanOrEqual(10)
})
