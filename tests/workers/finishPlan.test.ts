import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'bun:test'
import type postgres from 'postgres'
import { createDb, type DbHandle } from '../../src/server/db/client'
import type { ServerApp } from '../../src/server/serverApp'
import { claimJobs } from '../../src/server/workers/queue/claim'
import { finishJobs } from '../../src/server/workers/queue/finish'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { sqlClient, testServerApp } from '../helpers/engine'
import { seqScanCount } from '../helpers/plans'

/**
 * The finish statement finds its rows by primary key at any table size. It once joined the batch's
 * recordset (always guessed at 100 rows) to the held-by filter, and on an analyzed table of a few
 * thousand rows the planner chose a hash join over a sequential scan of the whole table: one full scan
 * per finished job in a quiet server (seen in the latency benchmark, 0.5 ms each at 1,200 rows).
 */
let db: TestDatabase
let app: ServerApp
let sql: postgres.Sql
/** One connection, so its backend's scan counter covers exactly the finishes. */
let writer: DbHandle

beforeAll(async () => {
  db = await createTestDatabase('finish_plan')
  app = await testServerApp(db.url)
  sql = sqlClient(db.url)
  writer = createDb(db.url, { max: 1 })
})
afterAll(async () => {
  await writer.close()
  await app.dbHandle.close()
  await sql.end()
  await db.drop()
})
beforeEach(async () => {
  await sql`TRUNCATE worker_jobs`
})

describe('finishJobs', () => {
  for (const finishedRows of [1_200, 5_000, 50_000]) {
    test(`reads no row it does not finish, with ${finishedRows.toLocaleString()} finished rows kept (analyzed)`, async () => {
      await sql`INSERT INTO worker_jobs (type, started, finished, success, result, remove_at, attempt)
        SELECT 'noop', now(), now(), true, '{"ok":true}', now() + interval '7 days', 1 FROM generate_series(1, ${finishedRows})`
      const jobs = await app.workerManager.submitJobs(Array.from({ length: 8 }, () => ({ type: 'noop' })))
      await sql`VACUUM ANALYZE worker_jobs`
      const before = await seqScanCount(writer.client)
      // One job per finish, as a quiet server writes them; more than five runs, so the prepared
      // statement's generic plan (chosen from the sixth execution) is covered too.
      for (let i = 0; i < jobs.length; i++) {
        const [job] = await claimJobs(app.db, { workerId: 'w', limit: 1, leaseMs: 10_000, types: ['noop'] })
        const written = await finishJobs(writer.db, 'w', [{ job: job!, success: true, result: { n: i } }])
        expect([...written]).toEqual([[job!.id, 'succeeded']])
      }
      expect(await seqScanCount(writer.client)).toBe(before)
      const rows = await sql`SELECT success, result FROM worker_jobs WHERE id = ANY(${jobs.map((j) => j.id)}::bigint[]) ORDER BY id`
      expect(rows.map((r) => r.success)).toEqual(Array(8).fill(true))
      expect(rows.map((r) => r.result)).toEqual(Array.from({ length: 8 }, (_, i) => ({ n: i })))
    })
  }

  test('a batch of 250 outcomes is written by primary key too, and only rows this worker holds', async () => {
    await sql`INSERT INTO worker_jobs (type, started, finished, success, result, remove_at, attempt)
      SELECT 'noop', now(), now(), true, '{"ok":true}', now() + interval '7 days', 1 FROM generate_series(1, 5000)`
    await app.workerManager.submitJobs(Array.from({ length: 251 }, () => ({ type: 'noop' })))
    await sql`VACUUM ANALYZE worker_jobs`
    const mine = await claimJobs(app.db, { workerId: 'w', limit: 250, leaseMs: 10_000, types: ['noop'] })
    const [theirs] = await claimJobs(app.db, { workerId: 'other', limit: 1, leaseMs: 10_000, types: ['noop'] })
    const before = await seqScanCount(writer.client)
    const outcomes = [...mine, theirs!].map((job) => ({ job, success: true, result: null }))
    const written = await finishJobs(writer.db, 'w', outcomes)
    expect(await seqScanCount(writer.client)).toBe(before)
    expect(written.size).toBe(250)
    expect(written.has(theirs!.id)).toBe(false)
    const [other] = await sql`SELECT finished FROM worker_jobs WHERE id = ${theirs!.id}`
    expect(other!.finished).toBeNull()
  })

  test('an interrupted job goes back to pending by primary key too', async () => {
    await sql`INSERT INTO worker_jobs (type, started, finished, success, result, remove_at, attempt)
      SELECT 'noop', now(), now(), true, '{"ok":true}', now() + interval '7 days', 1 FROM generate_series(1, 5000)`
    await app.workerManager.submitJobs(Array.from({ length: 8 }, () => ({ type: 'noop' })))
    await sql`VACUUM ANALYZE worker_jobs`
    const before = await seqScanCount(writer.client)
    for (let i = 0; i < 8; i++) {
      const [job] = await claimJobs(app.db, { workerId: 'w', limit: 1, leaseMs: 10_000, types: ['noop'] })
      const written = await finishJobs(writer.db, 'w', [
        { job: job!, success: false, result: { error: 'stopping' }, interrupted: { reason: 'stopping', rerun: true } },
      ])
      expect([...written]).toEqual([[job!.id, 'interrupted']])
    }
    expect(await seqScanCount(writer.client)).toBe(before)
    const [row] = await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE started IS NULL AND finished IS NULL AND last_error = 'stopping'`
    expect(row!.n).toBe(8)
  })
})
