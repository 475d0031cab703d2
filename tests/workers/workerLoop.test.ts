import { afterAll, beforeAll, expect, test } from 'bun:test'
import type postgres from 'postgres'
import type { ServerApp } from '../../src/server/serverApp'
import { submitJob } from '../../src/server/workers/queue/submit'
import { CANCEL_CHANNEL } from '../../src/server/workers/queue/notify'
import { QueueDb } from '../../src/server/workers/queueDb'
import { WorkerLoop } from '../../src/server/workers/workerLoop'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { CREATE_RUNS_TABLE, sqlClient, testServerApp } from '../helpers/engine'
import { startTcpProxy } from '../helpers/tcpProxy'
import { waitFor } from '../helpers/wait'

/**
 * The worker loop in this process, against a real database:
 * - abortAll (an orphaned child, a forced shutdown) must stop every job, including those of a claim that
 *   was in flight when it was called: such a job never starts, and goes back to pending as it was. (An
 *   orphan used to run one for as long as its handler took, until its exit deadline killed it mid-run.)
 * - a loop started while the database is unreachable waits for it (a child spawned during a Postgres
 *   restart used to exit at once with the LISTEN's connection error).
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
  const { loop, queue, holder, job } = await claimHeldOnLock(0)
  try {
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

test('a cancel that arrives before the claim it concerns has been read is applied when the job starts', async () => {
  const { loop, queue, holder, job } = await claimHeldOnLock(60_000)
  try {
    // The cancel's NOTIFY overtakes the claim (they travel on different connections).
    await sql`SELECT pg_notify(${CANCEL_CHANNEL}, ${String(job.id)})`
    await waitFor(() => loop.earlyCancelCount === 1, { what: 'the loop to hold the early cancel' })
    await holder`COMMIT`
    // Without the remembered cancel the handler would hold its 60 s.
    await waitFor(async () => (await sql`SELECT 1 FROM worker_jobs WHERE id = ${job.id} AND finished IS NOT NULL`).length === 1, {
      timeoutMs: 10_000,
      what: 'the cancelled job to end',
    })
    const [row] = await sql`SELECT success, result FROM worker_jobs WHERE id = ${job.id}`
    expect(row!.success).toBe(false)
    expect(JSON.stringify(row!.result)).toContain('cancel')
  } finally {
    holder.release()
    await loop.drain()
    await queue.close()
  }
})

/**
 * A started loop whose claim of a new `serial` job (holding `holdMs`) is in flight and waiting: the test
 * holds that type's advisory lock (limits.ts) until it COMMITs on `holder`.
 */
async function claimHeldOnLock(holdMs: number) {
  const applicationName = `held claim ${Math.random().toString(36).slice(2, 8)}`
  const queue = new QueueDb(db.url, { max: 2, applicationName }, 10_000)
  const loop = newLoop(app, queue)
  const holder = await sql.reserve()
  await holder`BEGIN`
  await holder`SELECT pg_advisory_xact_lock(hashtextextended('worker_jobs.limit:serial', 0))`
  await loop.start()
  const job = await submitJob(app.db, app.registry, { type: 'serial', data: { holdMs } })
  await waitFor(
    async () => (await sql`SELECT 1 FROM pg_stat_activity WHERE application_name = ${applicationName} AND wait_event = 'advisory'`).length > 0,
    { what: 'the claim to wait on the lock' },
  )
  return { loop, queue, holder, job }
}

function newLoop(serverApp: ServerApp, queue: QueueDb, notifyAnswerDelayMs = 0, slots: { concurrency?: number; urgentSlots?: number } = {}): WorkerLoop {
  return new WorkerLoop(serverApp, serverApp.log, {
    notifyAnswerDelayMs,
    urgentSlots: slots.urgentSlots ?? 0,
    workerId: `test/${Math.random().toString(36).slice(2, 8)}`,
    concurrency: slots.concurrency ?? 4,
    pollIntervalMs: 60_000,
    leaseMs: 10_000,
    defaultTimeoutMs: 60_000,
    queueDb: queue,
  })
}

test('a later child answers a NOTIFY after its delay, not at once, and still long before its poll', async () => {
  // The first child takes a new job alone; the others claim a few ms later, so a job still starts at once
  // when the first child is full or gone. Its poll here is a minute away: only the delayed answer can run it.
  const queue = new QueueDb(db.url, { max: 2 }, 10_000)
  const loop = newLoop(app, queue, 300)
  await loop.start()
  try {
    // Past its first look (a claim at start takes what is due without any NOTIFY).
    await waitFor(() => loop.parked, { what: 'the loop to wait for work' })
    const job = await submitJob(app.db, app.registry, { type: 'noop' })
    await waitFor(async () => (await sql`SELECT 1 FROM worker_jobs WHERE id = ${job.id} AND success`).length === 1, {
      timeoutMs: 10_000,
      what: 'the job to run',
    })
    const [row] = await sql`SELECT extract(epoch FROM started - created_at) * 1000 AS waited FROM worker_jobs WHERE id = ${job.id}`
    expect(Number(row!.waited)).toBeGreaterThanOrEqual(300)
  } finally {
    await loop.drain()
    await queue.close()
  }
})

test('with every slot busy, a job below priority 0 starts in the urgent slot at once; an ordinary one waits', async () => {
  await sql`TRUNCATE worker_jobs`
  const queue = new QueueDb(db.url, { max: 2 }, 10_000)
  const loop = newLoop(app, queue, 0, { concurrency: 1, urgentSlots: 1 })
  await loop.start()
  try {
    const long = await submitJob(app.db, app.registry, { type: 'sleep', data: { ms: 60_000 } })
    await waitFor(async () => (await sql`SELECT 1 FROM worker_jobs WHERE id = ${long.id} AND started IS NOT NULL`).length === 1, { what: 'the long job to start' })
    const ordinary = await submitJob(app.db, app.registry, { type: 'noop' })
    const urgent = await submitJob(app.db, app.registry, { type: 'noop', priority: -1 })
    await waitFor(async () => (await sql`SELECT 1 FROM worker_jobs WHERE id = ${urgent.id} AND success`).length === 1, {
      timeoutMs: 10_000,
      what: 'the urgent job to run beside the long one',
    })
    // The poll is a minute away, and the only ordinary slot is still taken: the ordinary job never started.
    const rows = await sql`SELECT id::int, started IS NOT NULL AS started, finished IS NOT NULL AS finished FROM worker_jobs ORDER BY id`
    expect([...rows]).toEqual([
      { id: long.id, started: true, finished: false },
      { id: ordinary.id, started: false, finished: false },
      { id: urgent.id, started: true, finished: true },
    ])
    expect(loop.runningJobs).toBe(1)
  } finally {
    loop.abortAll('test over')
    await loop.drain()
    await queue.close()
    // The interrupted long job went back to pending: no later test's loop may pick it up.
    await sql`TRUNCATE worker_jobs`
  }
})

test('a loop started while the database is unreachable retries until it is back, then runs jobs', async () => {
  const proxy = await startTcpProxy()
  proxy.blackhole('drop')
  const url = proxy.urlThrough(db.url)
  const unreachable = await testServerApp(url, { DB_CONNECT_TIMEOUT_MS: '300' })
  const queue = new QueueDb(db.url, { max: 2 }, 10_000)
  const loop = newLoop(unreachable, queue)
  try {
    let started = false
    const starting = loop.start().then(() => {
      started = true
    })
    // Its LISTEN connection timed out and was tried again.
    await waitFor(() => proxy.accepted >= 2, { what: 'a second connection attempt' })
    expect(started).toBe(false)
    proxy.heal()
    await starting
    const job = await submitJob(app.db, app.registry, { type: 'serial', data: { holdMs: 0 } })
    await waitFor(async () => (await sql`SELECT 1 FROM worker_jobs WHERE id = ${job.id} AND success`).length === 1, { what: 'the job to run' })
  } finally {
    await loop.drain()
    await Promise.all([queue.close(), unreachable.dbHandle.close()])
    await proxy.close()
  }
})

test('a claim that fails is counted as a claim error in the metrics the child reports', async () => {
  // Nothing listens on port 1: every claim fails at once with ECONNREFUSED (the LISTEN uses app's own pool).
  const unreachable = new URL(db.url)
  unreachable.port = '1'
  const queue = new QueueDb(unreachable.href, { max: 1, connectTimeoutMs: 500 }, 2000)
  const loop = newLoop(app, queue)
  app.metrics.take()
  let errors = 0
  try {
    await loop.start()
    await waitFor(
      () => {
        errors += app.metrics.take()?.claimErrors ?? 0
        return errors >= 1
      },
      { what: 'a claim error to be counted' },
    )
    expect(loop.health().runningJobs).toBe(0)
  } finally {
    await loop.drain()
    await queue.close()
  }
})
