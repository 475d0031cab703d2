import { afterAll, beforeAll, expect, test } from 'bun:test'
import type postgres from 'postgres'
import { createHttpApp } from '../../src/server/http/app'
import { createServerApp, type ServerApp } from '../../src/server/serverApp'
import { queueDepth, queueDepthStatement } from '../../src/server/workers/queue/depth'
import { failUnrunnableJobs } from '../../src/server/workers/queue/unrunnable'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { sqlClient, testServerApp } from '../helpers/engine'
import { planOf, seqScanCount, seqScansOfJobs } from '../helpers/plans'
import { parsePrometheus, sampleKey as k } from './client'

/**
 * A scrape of /metrics reads only the pending and running rows, through their partial indexes: with many
 * finished rows in worker_jobs its plan has no sequential scan of the table, before the table was ever
 * analyzed (the first minutes after a deploy) and after. (It used to count succeeded and failed rows by
 * type: a full scan, 1 s a scrape at a million rows.)
 */
let db: TestDatabase
let sql: postgres.Sql
let app: ServerApp

const FINISHED = 200_000

beforeAll(async () => {
  db = await createTestDatabase('metrics_plan')
  sql = sqlClient(db.url)
  // One connection: Postgres counts a backend's scans in pg_stat only once that backend flushes them, so
  // the statements and seqScanCount must share it.
  const base = await testServerApp(db.url)
  await base.dbHandle.close()
  app = createServerApp({ config: base.config, log: base.log, registry: base.registry, dbPoolSize: 1 })
  await sql`INSERT INTO worker_jobs (type, started, finished, success, remove_at)
            SELECT CASE WHEN g % 2 = 0 THEN 'noop' ELSE 'fail' END, now() - interval '1 hour', now() - interval '1 hour', g % 2 = 0, now() + interval '7 days'
            FROM generate_series(1, ${FINISHED}) AS g`
  // Pending due (the common claim's index), pending later, pending of a limited type (its own index), running.
  await sql`INSERT INTO worker_jobs (type, due, priority) VALUES
    ('noop', now() - interval '5 seconds', 0), ('noop', now() - interval '1 second', -1), ('sleep', now(), 3),
    ('noop', now() + interval '1 hour', 0), ('fail', now() + interval '1 day', 0)`
  await sql`INSERT INTO worker_jobs (type, due, concurrency_key) VALUES ('serial', now() - interval '2 seconds', ''), ('serial', now() + interval '1 hour', '')`
  await sql`INSERT INTO worker_jobs (type, started, locked_by, lease_expires_at) VALUES ('sleep', now(), 'some/worker', now() + interval '1 hour')`
})
afterAll(async () => {
  await app?.dbHandle.close()
  await sql?.end()
  await db?.drop()
})

async function render(): Promise<Map<string, number>> {
  const res = await createHttpApp(app, null).handle(new Request('http://localhost/metrics'))
  expect(res.status).toBe(200)
  return parsePrometheus(await res.text())
}

function expectFigures(samples: Map<string, number>): void {
  expect(samples.get(k('worker_queue_jobs', { state: 'pending_due' }))).toBe(4)
  expect(samples.get(k('worker_queue_jobs', { state: 'pending_future' }))).toBe(3)
  expect(samples.get(k('worker_queue_jobs', { state: 'running' }))).toBe(1)
  expect(samples.get(k('worker_queue_jobs_by_type', { type: 'serial', state: 'pending_due' }))).toBe(1)
  expect(samples.get(k('worker_queue_jobs_by_type', { type: 'sleep', state: 'running' }))).toBe(1)
  expect(samples.get(k('worker_queue_jobs_by_type', { type: 'fail', state: 'pending_future' }))).toBe(1)
  expect(samples.get('worker_queue_depth')).toBe(4)
  expect(samples.get(k('worker_queue_depth_by_priority', { priority: 'negative' }))).toBe(1)
  expect(samples.get(k('worker_queue_depth_by_priority', { priority: 'zero' }))).toBe(2)
  expect(samples.get(k('worker_queue_depth_by_priority', { priority: 'positive' }))).toBe(1)
  // No server has announced itself in this database: every due job waits for one.
  expect(samples.get('worker_jobs_unrunnable')).toBe(4)
  const age = samples.get('worker_queue_oldest_due_age_seconds')!
  expect(age).toBeGreaterThanOrEqual(5)
  expect(age).toBeLessThan(60)
  // Nothing about finished rows is read back from the table.
  expect([...samples.keys()].some((key) => key.includes('succeeded'))).toBe(false)
}

test('the queue depth statement has no sequential scan of worker_jobs, before and after ANALYZE', async () => {
  const [stats] = await sql`SELECT reltuples FROM pg_class WHERE relname = 'worker_jobs'`
  expect(stats?.reltuples).toBe(-1)
  expect(seqScansOfJobs(await planOf(app.db, queueDepthStatement()))).toEqual([])
  const before = await seqScanCount(app.dbHandle.client)
  expectFigures(await render())
  expect(await seqScanCount(app.dbHandle.client)).toBe(before)

  await sql`VACUUM ANALYZE worker_jobs`
  expect(seqScansOfJobs(await planOf(app.db, queueDepthStatement()))).toEqual([])
  const after = await seqScanCount(app.dbHandle.client)
  expectFigures(await render())
  expect(await seqScanCount(app.dbHandle.client)).toBe(after)
})

test('queueDepth splits each type by state', async () => {
  const rows = Object.fromEntries((await queueDepth(app.db)).map((r) => [r.type, r]))
  expect(Object.keys(rows).sort()).toEqual(['fail', 'noop', 'serial', 'sleep'])
  expect(rows.noop).toMatchObject({ pendingDue: 2, pendingFuture: 1, running: 0, dueBelow: 1, dueZero: 1, dueAbove: 0, live: false })
  expect(rows.sleep).toMatchObject({ pendingDue: 1, pendingFuture: 0, running: 1, dueAbove: 1 })
  expect(rows.serial).toMatchObject({ pendingDue: 1, pendingFuture: 1, running: 0 })
  expect(rows.fail!.oldestDueAgeSeconds).toBeNull()
})

test("the manager's sweep for jobs no live server registers reads no finished row either", async () => {
  // A live server that registers every type here: the sweep looks (EXISTS holds) and finds nothing to fail.
  await sql`INSERT INTO worker_servers (id, hostname, pid, job_types) VALUES ('plan-test', 'h', 1, ARRAY['noop', 'fail', 'sleep', 'serial'])`
  const before = await seqScanCount(app.dbHandle.client)
  expect(await failUnrunnableJobs(app.db, 1000)).toEqual([])
  expect(await seqScanCount(app.dbHandle.client)).toBe(before)
  // The limit is real: a type nobody registers, due long ago, is failed.
  const [row] = await sql`INSERT INTO worker_jobs (type, due) VALUES ('nobodys', now() - interval '1 hour') RETURNING id`
  expect(await failUnrunnableJobs(app.db, 1000)).toEqual([Number(row!.id)])
  expect(await seqScanCount(app.dbHandle.client)).toBe(before)
})
