import { afterAll, beforeAll, expect, test } from 'bun:test'
import type postgres from 'postgres'
import type { ServerApp } from '../../src/server/serverApp'
import { submitJob } from '../../src/server/workers/queue/submit'
import { QueueDb } from '../../src/server/workers/queueDb'
import { WorkerLoop } from '../../src/server/workers/workerLoop'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { CREATE_RUNS_TABLE, sqlClient, testServerApp } from '../helpers/engine'
import { waitFor } from '../helpers/wait'

/**
 * abortAll (an orphaned child, a forced shutdown) must stop every job, including those of a claim that
 * was in flight when it was called: such a job never starts, and goes back to pending as it was. (An
 * orphan used to run one for as long as its handler took, until its exit deadline killed it mid-run.)
 */
let db: TestDatabase
let sql: postgres.Sql
let app: ServerApp

beforeAll(async () => {
  db = await createTestDatabase('abortall')
  sql = sqlClient(db.url)
  await sql.unsafe(CREATE_RUNS_TABLE)
  app = await testServerApp(db.url)
})
afterAll(async () => {
  await app.dbHandle.close()
  await sql.end()
  await db.drop()
})

test('a job returned by a claim in flight when abortAll is called never runs and goes back to pending untouched', async () => {
  const queue = new QueueDb(db.url, { max: 2, applicationName: 'abortAll test queue' }, 10_000)
  const loop = new WorkerLoop(app, app.log, {
    workerId: 'test/abortAll',
    concurrency: 4,
    pollIntervalMs: 60_000,
    leaseMs: 10_000,
    defaultTimeoutMs: 60_000,
    queueDb: queue,
  })
  // Hold the per-type lock of the limited claim (limits.ts), so the loop's claim of `serial` waits on it.
  const holder = await sql.reserve()
  await holder`BEGIN`
  await holder`SELECT pg_advisory_xact_lock(hashtextextended('worker_jobs.limit:serial', 0))`
  try {
    await loop.start()
    const job = await submitJob(app.db, app.registry, { type: 'serial', data: { holdMs: 0 } })
    await waitFor(
      async () => (await sql`SELECT 1 FROM pg_stat_activity WHERE application_name = 'abortAll test queue' AND wait_event = 'advisory'`).length > 0,
      { what: 'the claim to wait on the lock' },
    )
    loop.abortAll('interrupted: the server process is gone')
    await holder`COMMIT`
    await loop.drain()
    const [row] = await sql`SELECT started, finished, locked_by, attempt, last_error FROM worker_jobs WHERE id = ${job.id}`
    expect(row).toEqual({ started: null, finished: null, locked_by: null, attempt: job.attempt, last_error: null })
    expect(await sql`SELECT * FROM test_job_runs`).toHaveLength(0)
  } finally {
    holder.release()
    await queue.close()
  }
})
