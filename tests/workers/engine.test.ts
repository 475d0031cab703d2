import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type postgres from 'postgres'
import type { RunningServer } from '../../src/server/boot'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { CREATE_RUNS_TABLE, sqlClient, startTestServer } from '../helpers/engine'
import { waitFor } from '../helpers/wait'

/**
 * The engine end to end: a real server in this process with two real child processes. Its poll
 * interval is a minute, so anything picked up quickly was woken by NOTIFY or the due-time timer.
 */
let db: TestDatabase
let server: RunningServer
let sql: postgres.Sql

beforeAll(async () => {
  db = await createTestDatabase('engine')
  sql = sqlClient(db.url)
  await sql.unsafe(CREATE_RUNS_TABLE)
  server = await startTestServer(db.url, { WORKER_COUNT: '2', WORKER_CONCURRENCY: '50', WORKER_POLL_INTERVAL_MS: '60000' })
})
afterAll(async () => {
  await server?.stop()
  await sql.end()
  await db.drop()
})

const submit = (input: Record<string, unknown>) => server.workerManager.submitJob(input as never)
const row = async (id: number) => (await sql`SELECT * FROM worker_jobs WHERE id = ${id}`)[0]!
const finished = (id: number, timeoutMs = 10_000) =>
  waitFor(async () => {
    const r = await row(id)
    return r.finished ? r : null
  }, { timeoutMs, what: `job ${id} to finish` })

describe('exactly once', () => {
  test('thousands of jobs over two children: each runs exactly once, never overlapping', async () => {
    const N = 3000
    const jobs = await server.workerManager.submitJobs(Array.from({ length: N }, () => ({ type: 'record', data: {} })))
    const ids = jobs.map((j) => j.id)
    await waitFor(async () => {
      const [r] = await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE id = ANY(${ids}) AND finished IS NOT NULL`
      return r!.n === N
    }, { timeoutMs: 60_000, what: 'all jobs to finish' })
    const [runs] = await sql`SELECT count(*)::int AS total, count(DISTINCT job_id)::int AS distinct_jobs,
      count(DISTINCT pid)::int AS pids FROM test_job_runs WHERE job_id = ANY(${ids})`
    expect(runs!.total).toBe(N)
    expect(runs!.distinct_jobs).toBe(N)
    expect(runs!.pids).toBe(2)
    const [overlaps] = await sql`SELECT count(*)::int AS n FROM test_job_runs a JOIN test_job_runs b
      ON a.job_id = b.job_id AND a.ctid <> b.ctid AND a.started_at < b.ended_at AND b.started_at < a.ended_at`
    expect(overlaps!.n).toBe(0)
    const [lifecycle] = await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE id = ANY(${ids})
      AND success AND started IS NOT NULL AND finished >= started AND remove_at = finished + interval '7 days'
      AND (result->>'pid')::int > 0 AND locked_by IS NOT NULL`
    expect(lifecycle!.n).toBe(N)
  }, 90_000)

  test('a row inserted by hand with only type, user_id and due runs', async () => {
    const [r] = await sql`INSERT INTO worker_jobs (type, user_id, due) VALUES ('noop', 3, now()) RETURNING id`
    const done = await finished(Number(r!.id))
    expect(done.success).toBe(true)
    expect(done.remove_at).not.toBeNull()
  })
})

describe('due times', () => {
  test('a future job is not run early, and runs promptly when due without waiting for a poll', async () => {
    const due = new Date(Date.now() + 1500)
    const job = await submit({ type: 'noop', due })
    const done = await finished(job.id)
    const started = new Date(done.started).getTime()
    expect(started).toBeGreaterThanOrEqual(due.getTime())
    // The poll interval is 60 s: only the due-time timer can have woken a worker this soon.
    expect(started - due.getTime()).toBeLessThan(1000)
  })
})

describe('failures and retries', () => {
  test('autoRescheduleOnFailure retries after its delay, counts attempts, stops at maxAttempts, keeps persistent', async () => {
    const first = await submit({ type: 'fail', autoRescheduleOnFailure: true, autoRescheduleOnFailureDelay: 1, maxAttempts: 3, persistent: true })
    const chain = await waitFor(async () => {
      const rows = await sql`WITH RECURSIVE c AS (SELECT * FROM worker_jobs WHERE id = ${first.id}
        UNION ALL SELECT j.* FROM worker_jobs j JOIN c ON j.rescheduled_from_job = c.id) SELECT * FROM c ORDER BY id`
      return rows.length === 3 && rows.every((r) => r.finished) ? rows : null
    }, { timeoutMs: 15_000, what: 'three attempts' })
    expect(chain.map((r) => r.attempt)).toEqual([1, 2, 3])
    expect(chain.every((r) => r.success === false && r.persistent === true && r.max_attempts === 3)).toBe(true)
    expect(chain[0]!.result.error).toBe('failed on purpose')
    for (let i = 1; i < chain.length; i++) {
      // Each retry is due `delay` seconds after its predecessor finished.
      const gap = new Date(chain[i]!.due).getTime() - new Date(chain[i - 1]!.finished).getTime()
      expect(gap).toBeGreaterThanOrEqual(990)
      expect(gap).toBeLessThan(1100)
      expect(new Date(chain[i]!.started).getTime()).toBeGreaterThanOrEqual(new Date(chain[i]!.due).getTime())
    }
    // No fourth attempt.
    const [after] = await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE rescheduled_from_job = ${chain[2]!.id}`
    expect(after!.n).toBe(0)
  }, 30_000)

  test('a timeout aborts the run and fails the job', async () => {
    const job = await submit({ type: 'hang' })
    const done = await finished(job.id)
    expect(done.success).toBe(false)
    expect(done.result.error).toBe('job timed out after 300 ms')
    expect(done.result.name).toBe('JobTimeoutError')
  })

  test('bad data in a hand-inserted row fails with a clear error', async () => {
    const [b] = await sql`INSERT INTO worker_jobs (type, user_id, due, data) VALUES ('sleep', 0, now(), '{"ms": "x"}') RETURNING id`
    expect((await finished(Number(b!.id))).result.error).toContain('data.ms')
  })

  test('a row of a type no live server registers is not claimed; past WORKER_UNKNOWN_TYPE_FAIL_AFTER_MS it fails clearly', async () => {
    const [fresh] = await sql`INSERT INTO worker_jobs (type, user_id, due) VALUES ('nope', 0, now()) RETURNING id`
    // Due two hours ago: past the default hour, so the next announce tick (every 5 s) fails it.
    const [stale] = await sql`INSERT INTO worker_jobs (type, user_id, due) VALUES ('nope', 0, now() - interval '2 hours') RETURNING id`
    const failed = await finished(Number(stale!.id))
    expect(failed.success).toBe(false)
    expect(failed.started).toBeNull()
    expect(failed.result.error).toContain('no live server registers job type "nope"')
    const [waiting] = await sql`SELECT * FROM worker_jobs WHERE id = ${fresh!.id}`
    expect(waiting!.started).toBeNull()
    expect(waiting!.finished).toBeNull()
  })
})

describe('cron', () => {
  test('a cron job gets its successor at the next cron time', async () => {
    const job = await submit({ type: 'noop', cronSchedule: '* * * * * *', due: new Date(), tag: 'every-second' })
    const done = await finished(job.id)
    expect(done.success).toBe(true)
    const [next] = await sql`SELECT * FROM worker_jobs WHERE rescheduled_from_job = ${job.id}`
    expect(next).toBeDefined()
    // The next cron time after the moment the outcome was planned, which lies between the run's start and
    // the row's finish (two clocks: the child's and the database's, so either second may be the one).
    const due = new Date(next!.due).getTime()
    expect(due % 1000).toBe(0)
    expect(due).toBeGreaterThanOrEqual(Math.floor(new Date(done.started).getTime() / 1000) * 1000 + 1000)
    expect(due).toBeLessThanOrEqual(Math.floor(new Date(done.finished).getTime() / 1000) * 1000 + 1000)
    expect(next!.cron_schedule).toBe('* * * * * *')
    expect(next!.tag).toBe('every-second')
    expect(next!.attempt).toBe(1)
  })

  test('a failing cron job keeps recurring', async () => {
    const job = await submit({ type: 'fail', cronSchedule: '* * * * * *', due: new Date() })
    const runs = await waitFor(async () => {
      const rows = await sql`WITH RECURSIVE c AS (SELECT * FROM worker_jobs WHERE id = ${job.id}
        UNION ALL SELECT j.* FROM worker_jobs j JOIN c ON j.rescheduled_from_job = c.id) SELECT * FROM c ORDER BY id`
      return rows.filter((r) => r.finished).length >= 3 ? rows : null
    }, { timeoutMs: 10_000, what: 'three failed cron runs' })
    expect(runs.filter((r) => r.finished).every((r) => r.success === false)).toBe(true)
    expect(runs.filter((r) => !r.finished)).toHaveLength(1)
  }, 15_000)
})
