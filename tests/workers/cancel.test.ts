import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type postgres from 'postgres'
import { type RunningServer, startServer } from '../../src/server/boot'
import { loadConfig } from '../../src/server/config'
import { createLogger } from '../../src/server/log'
import { createServerApp, type ServerApp } from '../../src/server/serverApp'
import { buildRegistry, loadJobModules } from '../../src/server/workers/jobs/registry'
import { cancelJob, JobActionError, rerunJob } from '../../src/server/workers/queue/cancel'
import { statusOf } from '../../src/server/workers/queue/states'
import { JobInputError } from '../../src/server/workers/queue/submit'
import { CREATE_CANCEL_TABLES } from '../fixtures/cancelJobs'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { CREATE_ABORTS_TABLE, CREATE_RUNS_TABLE, sqlClient, TEST_JOB_MODULE } from '../helpers/engine'
import { type ServerProcess, startServerProcess, TEST_ENV } from '../helpers/server'
import { waitFor } from '../helpers/wait'

/**
 * Cancelling and rerunning jobs (queue/cancel.ts) against real Postgres and real child processes. Every
 * cancel and rerun here is issued from this test process's own connection pool, never through the
 * manager: the request reaches the child that holds the job through Postgres alone.
 */
const CANCEL_JOB_MODULE = new URL('../fixtures/cancelJobs.ts', import.meta.url).pathname
const ENV = {
  ...TEST_ENV,
  LOG_LEVEL: 'warn',
  WORKER_LOG_LEVEL: 'warn',
  CRON_REMOVE_OLD_WORKER_JOBS: 'off',
  WORKER_POLL_INTERVAL_MS: '60000',
  // Renewals every 400 ms: the lost-NOTIFY backstop answers within that.
  WORKER_LEASE_MS: '2000',
}
const NEXT_NEW_YEAR = '0 0 1 1 *'

let db: TestDatabase
let sql: postgres.Sql
let server: RunningServer
/** The test's own ServerApp (its own pool, no workers): where cancelJob and rerunJob are called from. */
let app: ServerApp

async function createTables(client: postgres.Sql): Promise<void> {
  await client.unsafe(CREATE_RUNS_TABLE)
  await client.unsafe(CREATE_ABORTS_TABLE)
  for (const stmt of CREATE_CANCEL_TABLES.split(';')) await client.unsafe(stmt)
}

async function testApp(url: string): Promise<ServerApp> {
  const config = loadConfig({ ...ENV, DATABASE_URL: url })
  const registry = buildRegistry(await loadJobModules([TEST_JOB_MODULE, CANCEL_JOB_MODULE]))
  return createServerApp({ config, log: createLogger({ level: 'warn' }), registry })
}

beforeAll(async () => {
  db = await createTestDatabase('cancel')
  sql = sqlClient(db.url)
  await createTables(sql)
  const config = loadConfig({ ...ENV, DATABASE_URL: db.url, WORKER_COUNT: '2' })
  server = await startServer(config, { jobModules: [TEST_JOB_MODULE, CANCEL_JOB_MODULE], log: createLogger({ level: 'warn' }) })
  await server.ready
  app = await testApp(db.url)
})
afterAll(async () => {
  await server?.stop()
  await app?.dbHandle.close()
  await sql?.end()
  await db?.drop()
})

const rowOf = async (id: number, client = sql) => (await client`SELECT * FROM worker_jobs WHERE id = ${id}`)[0]!
const waitRunning = (id: number, client = sql) =>
  waitFor(async () => (await client`SELECT * FROM worker_jobs WHERE id = ${id} AND started IS NOT NULL AND finished IS NULL`)[0], {
    what: `job ${id} to start`,
  })
const waitFinished = (id: number, client = sql, timeoutMs = 10_000) =>
  waitFor(async () => (await client`SELECT * FROM worker_jobs WHERE id = ${id} AND finished IS NOT NULL`)[0], {
    timeoutMs,
    what: `job ${id} to finish`,
  })
const successorsOf = async (id: number) => (await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE rescheduled_from_job = ${id}`)[0]!.n
const runsOf = async (id: number) => (await sql`SELECT count(*)::int AS n FROM test_job_runs WHERE job_id = ${id}`)[0]!.n
const abortOf = (id: number, client = sql) =>
  waitFor(async () => (await client`SELECT * FROM test_job_aborts WHERE job_id = ${id}`)[0], { what: `job ${id}'s handler to see its abort` })
const seenBy = (id: number) =>
  waitFor(async () => (await sql`SELECT * FROM test_cancel_seen WHERE job_id = ${id}`)[0], { what: `job ${id}'s handler to see its signal fire` })
const openGate = (id: number) => sql`INSERT INTO test_cancel_gates (job_id) VALUES (${id})`
/** The row's status as the API reports it (states.ts), from its snake_case columns. */
const status = (r: Record<string, any>) => statusOf({ started: r.started, finished: r.finished, success: r.success, cancelledAt: r.cancelled_at })

async function refusal(p: Promise<unknown>): Promise<JobActionError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(JobActionError)
  return err as JobActionError
}

describe('cancelling a pending job', () => {
  test('finishes it as cancelled at once, and it never runs', async () => {
    const job = await app.workerManager.submitJob({ type: 'record', userId: 7, data: {}, due: new Date(Date.now() + 3_600_000), removeDelay: 120 })
    const res = await cancelJob(app.db, job.id, { ownerUserId: 7, by: 'user 7' })
    expect(res.outcome).toBe('cancelled')
    expect(statusOf(res.job)).toBe('CANCELLED')
    expect(res.job.result).toEqual({ error: 'cancelled', cancelledBy: 'user 7' })

    const row = await rowOf(job.id)
    expect(status(row)).toBe('CANCELLED')
    expect(row.success).toBe(false)
    expect(row.started).toBeNull()
    expect(new Date(row.remove_at).getTime() - new Date(row.finished).getTime()).toBe(120_000)
    // Were it still pending, this would make it the first job claimed: it is due before the control job.
    await sql`UPDATE worker_jobs SET due = now() - interval '1 second' WHERE id = ${job.id}`
    const control = await app.workerManager.submitJob({ type: 'record', data: {} })
    await waitFinished(control.id)
    expect(await runsOf(control.id)).toBe(1)
    expect(await runsOf(job.id)).toBe(0)
    expect((await rowOf(job.id)).started).toBeNull()
    expect(await successorsOf(job.id)).toBe(0)
  })

  test('a cron job cancelled while pending gets no successor: its schedule stops', async () => {
    const job = await app.workerManager.submitJob({ type: 'noop', cronSchedule: NEXT_NEW_YEAR, tag: 'yearly', autoRescheduleOnFailure: true })
    const res = await cancelJob(app.db, job.id, { by: 'admin' })
    expect(res.outcome).toBe('cancelled')
    expect(await successorsOf(job.id)).toBe(0)
    expect((await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE tag = 'yearly' AND finished IS NULL`)[0]!.n).toBe(0)
  })
})

describe('cancelling a running job', () => {
  test('a handler awaiting its signal sees the abort; the row is CANCELLED with its outcome, no retry, attempt unchanged', async () => {
    const job = await app.workerManager.submitJob({
      type: 'watchful',
      userId: 7,
      data: { ms: 120_000 },
      autoRescheduleOnFailure: true,
      autoRescheduleOnFailureDelay: 1,
    })
    await waitRunning(job.id)
    const res = await cancelJob(app.db, job.id, { ownerUserId: 7, by: 'user 7' })
    expect(res.outcome).toBe('cancelling')
    // A request: the row is still running until its handler ends.
    expect(statusOf(res.job)).toBe('RUNNING')
    expect(res.job.cancelledAt).toBeInstanceOf(Date)

    const abort = await abortOf(job.id)
    expect(abort.reason).toContain('cancelled')
    // The handler ran in a child process, not in this one (which issued the cancel).
    expect(abort.pid).not.toBe(process.pid)
    const row = await waitFinished(job.id)
    expect(status(row)).toBe('CANCELLED')
    expect(row.success).toBe(false)
    expect(row.attempt).toBe(1)
    expect(row.result).toMatchObject({
      error: 'cancelled',
      cancelledBy: 'user 7',
      outcome: { error: abort.reason, name: 'JobCancelledError' },
    })
    // autoRescheduleOnFailure would have inserted a retry for a failure; a cancel gets none.
    expect(await successorsOf(job.id)).toBe(0)
  })

  test('a handler that ignores its signal and returns later is still CANCELLED, with its result kept in outcome; cancelling twice is idempotent', async () => {
    const job = await app.workerManager.submitJob({ type: 'stubborn', data: {}, autoRescheduleOnFailure: true })
    await waitRunning(job.id)
    const first = await cancelJob(app.db, job.id, { by: 'admin' })
    expect(first.outcome).toBe('cancelling')
    const seen = await seenBy(job.id)
    expect(seen.reason).toContain('cancelled')
    // The abort did not end the run: the handler is still going, and the row still running.
    const again = await cancelJob(app.db, job.id, { by: 'someone else' })
    expect(again.outcome).toBe('cancelling')
    expect(again.job.cancelledAt!.getTime()).toBe(first.job.cancelledAt!.getTime())
    expect(status(await rowOf(job.id))).toBe('RUNNING')

    await openGate(job.id)
    const row = await waitFinished(job.id)
    expect(status(row)).toBe('CANCELLED')
    expect(row.success).toBe(false)
    expect(row.result).toEqual({ error: 'cancelled', cancelledBy: 'admin', outcome: { ignoredSignal: true, reason: seen.reason } })
    expect(await successorsOf(job.id)).toBe(0)
    await refusal(cancelJob(app.db, job.id, { by: 'admin' })).then((e) => expect(e.code).toBe('ALREADY_FINISHED'))
  })

  test('a cron job cancelled while running gets no successor after it ends', async () => {
    const job = await app.workerManager.submitJob({ type: 'watchful', data: { ms: 120_000 }, cronSchedule: NEXT_NEW_YEAR, due: new Date() })
    await waitRunning(job.id)
    expect((await cancelJob(app.db, job.id, { by: 'admin' })).outcome).toBe('cancelling')
    const row = await waitFinished(job.id)
    expect(status(row)).toBe('CANCELLED')
    // The successor would have been inserted in the finish's own transaction.
    expect(await successorsOf(job.id)).toBe(0)
  })

  test('a lost NOTIFY: cancelled_at set by a plain UPDATE is found by the lease renewal, which aborts the job', async () => {
    const job = await app.workerManager.submitJob({ type: 'watchful', data: { ms: 120_000 } })
    await waitRunning(job.id)
    await sql`UPDATE worker_jobs SET cancelled_at = now() WHERE id = ${job.id}`
    const abort = await abortOf(job.id)
    expect(abort.reason).toContain('cancelled')
    const row = await waitFinished(job.id)
    expect(status(row)).toBe('CANCELLED')
    // Nobody named themselves: no cancelledBy.
    expect(row.result).toEqual({ error: 'cancelled', outcome: expect.objectContaining({ error: abort.reason }) })
  })

  test('a child killed (SIGKILL) while a cancel is requested: its job is rescued as CANCELLED, never run again', async () => {
    const job = await app.workerManager.submitJob({ type: 'stubborn', data: {}, autoRescheduleOnFailure: true, cronSchedule: NEXT_NEW_YEAR, due: new Date() })
    const running = await waitRunning(job.id)
    expect((await cancelJob(app.db, job.id, { by: 'admin' })).outcome).toBe('cancelling')
    const seen = await seenBy(job.id)
    process.kill(seen.pid, 'SIGKILL')
    const row = await waitFinished(job.id)
    expect(status(row)).toBe('CANCELLED')
    expect(row.attempt).toBe(1)
    expect(row.locked_by).toBe(running.locked_by)
    expect(row.result).toEqual({ error: 'cancelled', cancelledBy: 'admin', outcome: { error: 'interrupted: its worker process exited' } })
    expect(await successorsOf(job.id)).toBe(0)
    expect((await sql`SELECT count(*)::int AS n FROM test_cancel_seen WHERE job_id = ${job.id}`)[0]!.n).toBe(1)
    // The manager brings the child back.
    await waitFor(() => server.workerManager.aliveCount === 2, { what: 'the killed child to come back' })
  }, 20_000)

  test("a dead server's cancel-requested rows are rescued as CANCELLED when their leases expire, whatever their rerun rules", async () => {
    const rows = await sql`INSERT INTO worker_jobs (type, user_id, due, started, locked_by, lease_expires_at, cancelled_at, result,
        cron_schedule, auto_reschedule_on_failure, attempt, max_attempts)
      VALUES
        ('noop', 0, now(), now(), 'dead-host/1/w0/x', now() - interval '1 second', now(), '{"cancelledBy": "user 3"}', ${NEXT_NEW_YEAR}, true, 1, 5),
        ('onceOnly', 0, now(), now(), 'dead-host/1/w0/x', now() - interval '1 second', now(), NULL, NULL, true, 5, 5)
      RETURNING id`
    const [rerunnable, once] = rows.map((r) => Number(r.id)) as [number, number]
    const a = await waitFinished(rerunnable)
    const b = await waitFinished(once)
    for (const r of [a, b]) {
      expect(status(r)).toBe('CANCELLED')
      expect(r.attempt).toBe(r.id === String(once) ? 5 : 1)
    }
    expect(a.result).toEqual({ error: 'cancelled', cancelledBy: 'user 3', outcome: { error: 'lease expired: its worker stopped responding' } })
    expect(b.result).toEqual({ error: 'cancelled', outcome: { error: 'lease expired: its worker stopped responding' } })
    expect(await successorsOf(rerunnable)).toBe(0)
    expect(await successorsOf(once)).toBe(0)
  })
})

describe('who may cancel what', () => {
  test("another user's job is NOT_FOUND and left untouched; a finished job is ALREADY_FINISHED; an unknown id NOT_FOUND", async () => {
    const pending = await app.workerManager.submitJob({ type: 'noop', userId: 7, due: new Date(Date.now() + 3_600_000) })
    const before = await rowOf(pending.id)
    const e1 = await refusal(cancelJob(app.db, pending.id, { ownerUserId: 8, by: 'user 8' }))
    expect(e1.code).toBe('NOT_FOUND')
    expect(e1.message).toBe(`job ${pending.id} not found`)
    expect(await rowOf(pending.id)).toEqual(before)

    const running = await app.workerManager.submitJob({ type: 'stubborn', userId: 7, data: {} })
    await waitRunning(running.id)
    const e2 = await refusal(cancelJob(app.db, running.id, { ownerUserId: 8, by: 'user 8' }))
    expect(e2.code).toBe('NOT_FOUND')
    const still = await rowOf(running.id)
    expect(still.cancelled_at).toBeNull()
    expect(still.result).toBeNull()

    // The owner may; the row then finishes, and a further cancel is refused as finished.
    expect((await cancelJob(app.db, running.id, { ownerUserId: 7, by: 'user 7' })).outcome).toBe('cancelling')
    await seenBy(running.id)
    await openGate(running.id)
    await waitFinished(running.id)
    expect((await refusal(cancelJob(app.db, running.id, { ownerUserId: 7, by: 'user 7' }))).code).toBe('ALREADY_FINISHED')
    // Another user still learns nothing about it.
    expect((await refusal(cancelJob(app.db, running.id, { ownerUserId: 8, by: 'user 8' }))).code).toBe('NOT_FOUND')

    const done = await app.workerManager.submitJob({ type: 'noop', userId: 7 })
    await waitFinished(done.id)
    expect((await refusal(cancelJob(app.db, done.id, { by: 'admin' }))).code).toBe('ALREADY_FINISHED')
    expect(status(await rowOf(done.id))).toBe('SUCCEEDED')
    expect((await refusal(cancelJob(app.db, 987_654_321, { by: 'admin' }))).code).toBe('NOT_FOUND')
  })
})

describe('rerunning a job', () => {
  test('a failed job reruns as a new pending row (rescheduled_from_job, options copied, attempt 1), and it runs', async () => {
    const old = await app.workerManager.submitJob({
      type: 'record',
      userId: 5,
      data: { fail: true },
      removeDelay: 100,
      persistent: true,
      maxAttempts: 1,
      autoRescheduleOnFailure: true,
      autoRescheduleOnFailureDelay: 60,
    })
    const failed = await waitFinished(old.id)
    expect(status(failed)).toBe('FAILED')
    const before = Date.now()
    const job = await rerunJob(app.db, app.registry, old.id, { ownerUserId: 5 })
    expect(job.id).toBeGreaterThan(old.id)
    expect(job).toMatchObject({
      type: 'record',
      userId: 5,
      data: { holdMs: 0, fail: true },
      removeDelay: 100,
      persistent: true,
      maxAttempts: 1,
      autoRescheduleOnFailure: true,
      autoRescheduleOnFailureDelay: 60,
      attempt: 1,
      rescheduledFromJob: old.id,
      cronSchedule: null,
      tag: null,
      started: null,
      finished: null,
    })
    expect(Math.abs(job.due.getTime() - before)).toBeLessThan(5000)
    const stored = await rowOf(job.id)
    expect(Number(stored.rescheduled_from_job)).toBe(old.id)
    const ran = await waitFinished(job.id)
    expect(status(ran)).toBe('FAILED')
    expect(await runsOf(job.id)).toBe(1)
    expect(await runsOf(old.id)).toBe(1)
  })

  test('a pending job is NOT_FINISHED, nothing is inserted; another user\'s is NOT_FOUND; a cancelled one may be rerun', async () => {
    const pending = await app.workerManager.submitJob({ type: 'noop', userId: 5, due: new Date(Date.now() + 3_600_000) })
    const count = async () => (await sql`SELECT count(*)::int AS n FROM worker_jobs`)[0]!.n
    const n = await count()
    const e = await refusal(rerunJob(app.db, app.registry, pending.id, {}))
    expect(e.code).toBe('NOT_FINISHED')
    expect((await refusal(rerunJob(app.db, app.registry, pending.id, { ownerUserId: 6 }))).code).toBe('NOT_FOUND')
    expect(await count()).toBe(n)

    await cancelJob(app.db, pending.id, { by: 'admin' })
    const again = await rerunJob(app.db, app.registry, pending.id, { ownerUserId: 5 })
    expect(again.rescheduledFromJob).toBe(pending.id)
    expect(status(await waitFinished(again.id))).toBe('SUCCEEDED')
  })

  test("a cron job's rerun is a one-off without tag or cron, and the schedule's pending successor stays", async () => {
    const cron = await app.workerManager.submitJob({ type: 'noop', userId: 3, cronSchedule: NEXT_NEW_YEAR, tag: 'nightly', due: new Date() })
    await waitFinished(cron.id)
    const [successor] = await sql`SELECT * FROM worker_jobs WHERE rescheduled_from_job = ${cron.id}`
    expect(successor!.tag).toBe('nightly')
    const rerun = await rerunJob(app.db, app.registry, cron.id, { ownerUserId: 3 })
    expect(rerun.cronSchedule).toBeNull()
    expect(rerun.tag).toBeNull()
    expect(rerun.rescheduledFromJob).toBe(cron.id)
    await waitFinished(rerun.id)
    expect(await successorsOf(rerun.id)).toBe(0)
    const kept = await rowOf(Number(successor!.id))
    expect(status(kept)).toBe('PENDING')
  })

  test("the data is validated against the type's current schema, and an unknown type is refused, as on submit", async () => {
    const rows = await sql`INSERT INTO worker_jobs (type, data, finished, success)
      VALUES ('sleep', '{}', now(), false), ('noLongerRegistered', '{}', now(), true) RETURNING id`
    const [badData, gone] = rows.map((r) => Number(r.id)) as [number, number]
    const count = async () => (await sql`SELECT count(*)::int AS n FROM worker_jobs`)[0]!.n
    const n = await count()
    const e1 = await rerunJob(app.db, app.registry, badData).catch((e: unknown) => e)
    expect(e1).toBeInstanceOf(JobInputError)
    expect((e1 as JobInputError).field).toBe('data.ms')
    const e2 = await rerunJob(app.db, app.registry, gone).catch((e: unknown) => e)
    expect(e2).toBeInstanceOf(JobInputError)
    expect((e2 as JobInputError).field).toBe('type')
    expect(await count()).toBe(n)
  })
})

describe('across processes', () => {
  let other: TestDatabase
  let osql: postgres.Sql
  let proc: ServerProcess
  let oapp: ServerApp
  beforeAll(async () => {
    other = await createTestDatabase('cancel_proc')
    osql = sqlClient(other.url)
    await createTables(osql)
    // A 10-minute lease renews every 2 minutes: within this test only the NOTIFY can deliver the cancel.
    proc = await startServerProcess({ ...ENV, LOG_LEVEL: 'info', DATABASE_URL: other.url, WORKER_COUNT: '2', WORKER_LEASE_MS: '600000' })
    oapp = await testApp(other.url)
  })
  afterAll(async () => {
    await proc?.stop()
    await oapp?.dbHandle.close()
    await osql?.end()
    await other?.drop()
  })

  test("a cancel from this process reaches, by NOTIFY, the handlers running in another server process's children", async () => {
    const ids = (await osql`INSERT INTO worker_jobs (type, data) SELECT 'watchful', '{"ms": 120000}' FROM generate_series(1, 4) RETURNING id`).map((r) =>
      Number(r.id),
    )
    const running = await Promise.all(ids.map((id) => waitRunning(id, osql)))
    // Held by the spawned server's children (their worker ids carry its pid), not by anything in this process.
    for (const r of running) expect(r.locked_by).toContain(`/${proc.proc.pid}/w`)
    for (const id of ids) expect((await cancelJob(oapp.db, id, { by: 'admin' })).outcome).toBe('cancelling')
    for (const id of ids) {
      const abort = await abortOf(id, osql)
      expect(abort.reason).toContain('cancelled')
      expect(abort.pid).not.toBe(process.pid)
      expect(abort.pid).not.toBe(proc.proc.pid)
      const row = await waitFinished(id, osql)
      expect(status(row)).toBe('CANCELLED')
      expect(row.result).toMatchObject({ error: 'cancelled', cancelledBy: 'admin', outcome: { name: 'JobCancelledError' } })
    }
  }, 30_000)
})
