import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type postgres from 'postgres'
import type { RunningServer } from '../../src/server/boot'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { sqlClient, startTestServer } from '../helpers/engine'
import { waitFor } from '../helpers/wait'

/**
 * Poison outcomes fail alone. Before: a cron string with no next run, or a result jsonb refuses, threw
 * inside the statement recording a whole batch; the batch was retried every 500 ms forever, the worker
 * stopped claiming while /health said ok, and the lease rescuer threw on the same row on every tick.
 */
let db: TestDatabase
let server: RunningServer
let sql: postgres.Sql

beforeAll(async () => {
  db = await createTestDatabase('poison')
  sql = sqlClient(db.url)
  server = await startTestServer(db.url, { WORKER_COUNT: '1', WORKER_LEASE_MS: '2000', CRON_REMOVE_OLD_WORKER_JOBS: 'off' })
})
afterAll(async () => {
  await server?.stop()
  await sql.end()
  await db.drop()
})

const row = async (id: number) => (await sql`SELECT * FROM worker_jobs WHERE id = ${id}`)[0]!
const finished = (id: number, timeoutMs = 10_000) =>
  waitFor(async () => {
    const r = await row(id)
    return r.finished ? r : null
  }, { timeoutMs, what: `job ${id} to finish` })
const health = async () => {
  const res = await fetch(`${server.url}/health`)
  return { code: res.status, body: (await res.json()) as any }
}

describe('results jsonb cannot hold', () => {
  test('NUL and lone surrogates are replaced, cycles cut, bigints kept as text, huge results cut to a preview', async () => {
    const kinds = ['nul', 'surrogate', 'circular', 'bigint', 'huge'] as const
    const jobs = await server.workerManager.submitJobs(kinds.map((kind) => ({ type: 'poisonResult', data: { kind } })))
    const done = await Promise.all(jobs.map((j) => finished(j.id)))
    expect(done.every((r) => r.success === true)).toBe(true)
    const [nul, surrogate, circular, bigint, huge] = done.map((r) => r.result)
    expect(nul).toEqual({ text: 'a\ufffdb', 'k\ufffd': 1 })
    expect(surrogate).toEqual({ text: 'x\ufffdy', pair: '\ud83d\ude00' })
    expect(circular).toEqual({ a: 1, self: '[circular]' })
    expect(bigint).toEqual({ wei: (10n ** 30n).toString() })
    expect(huge.truncated).toBe(true)
    expect(huge.chars).toBeGreaterThan(2_000_000)
    expect(huge.preview.length).toBeLessThanOrEqual(2_000)
  })

  test('an error message with a NUL is stored', async () => {
    const job = await server.workerManager.submitJob({ type: 'poisonResult', data: { kind: 'nulError' } })
    const done = await finished(job.id)
    expect(done.success).toBe(false)
    expect(done.result.error).toBe('bad\ufffdmessage')
  })
})

describe('under load, a poison job fails alone', () => {
  test('bad cron rows and unstorable results among 1,000 jobs: the 1,000 finish, the bad ones fail clearly, the worker keeps claiming', async () => {
    await sql`TRUNCATE worker_jobs`
    await server.workerManager.submitJobs(Array.from({ length: 1000 }, () => ({ type: 'noop' })))
    // Rows written by hand can hold any cron string: one that never fires, and garbage.
    const bad = await sql`INSERT INTO worker_jobs (type, cron_schedule) VALUES ('noop', '0 0 30 2 *'), ('noop', 'garbage'), ('fail', 'garbage')
      RETURNING id`
    await server.workerManager.submitJobs(Array.from({ length: 20 }, () => ({ type: 'poisonResult', data: { kind: 'nul' } })))
    await waitFor(async () => (await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE finished IS NULL`)[0]!.n === 0, {
      timeoutMs: 30_000,
      what: 'every job to finish',
    })
    const [ok] = await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE type IN ('noop', 'poisonResult') AND success AND cron_schedule IS NULL`
    expect(ok!.n).toBe(1020)
    for (const { id } of bad) {
      const r = await row(Number(id))
      expect(r.success).toBe(false)
      expect(r.result.error).toContain('cron_schedule')
      expect(r.result.error).toContain('no further runs are scheduled')
      expect((await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE rescheduled_from_job = ${r.id}`)[0]!.n).toBe(0)
    }
    // The failing job's own error is kept beside the cron error.
    expect((await row(Number(bad[2]!.id))).result.jobError).toBe('failed on purpose')
    expect((await health()).code).toBe(200)
    const after = await server.workerManager.submitJob({ type: 'noop' })
    expect((await finished(after.id)).success).toBe(true)
  }, 60_000)
})

describe('the rescuer', () => {
  test('works row by row: a row it cannot finish fails alone and the rows after it are rescued', async () => {
    // A dead server's rows: one whose attempts are used up and whose cron string has no next run (so the
    // rescuer must finish it and cannot compute a successor), one ordinary.
    const [poisoned] = await sql`INSERT INTO worker_jobs (type, cron_schedule, attempt, max_attempts, started, locked_by, lease_expires_at)
      VALUES ('noop', 'garbage', 3, 3, now() - interval '1 minute', 'dead/1/w0/x', now() - interval '1 second') RETURNING id`
    const [ordinary] = await sql`INSERT INTO worker_jobs (type, started, locked_by, lease_expires_at)
      VALUES ('noop', now() - interval '1 minute', 'dead/1/w0/x', now() - interval '1 second') RETURNING id`
    const p = await finished(Number(poisoned!.id))
    expect(p.success).toBe(false)
    expect(p.result.error).toContain('cron_schedule')
    expect(p.started).not.toBeNull()
    const o = await finished(Number(ordinary!.id))
    expect(o.success).toBe(true)
    expect(o.attempt).toBe(2)
    expect(o.last_error).toContain('lease expired')
  })
})

describe('cron strings', () => {
  test('a cron that never fires is refused at submit, naming the field', async () => {
    await expect(server.workerManager.submitJob({ type: 'noop', cronSchedule: '0 0 30 2 *' })).rejects.toThrow(/cronSchedule/)
    const [left] = await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE cron_schedule = '0 0 30 2 *' AND finished IS NULL`
    expect(left!.n).toBe(0)
  })
})

describe('retry storms', () => {
  test('a failed job with no delay backs off (never under a second), and is bounded by the default maxAttempts', async () => {
    const job = await server.workerManager.submitJob({ type: 'fail', autoRescheduleOnFailure: true })
    expect(job.maxAttempts).toBe(25)
    const first = await finished(job.id)
    const retry = await waitFor(async () => (await sql`SELECT * FROM worker_jobs WHERE rescheduled_from_job = ${job.id}`)[0], {
      what: 'the retry row',
    })
    const gap = new Date(retry.due).getTime() - new Date(first.finished).getTime()
    // Attempt 1 backs off 2 s ± 25%.
    expect(gap).toBeGreaterThanOrEqual(1400)
    expect(gap).toBeLessThanOrEqual(2600)
    expect(retry.attempt).toBe(2)
    expect(retry.max_attempts).toBe(25)
    await sql`UPDATE worker_jobs SET finished = now(), success = false WHERE id = ${retry.id} AND started IS NULL`
  })

  test('a row written by hand without max_attempts gets the default bound', async () => {
    const [r] = await sql`INSERT INTO worker_jobs (type, due) VALUES ('fail', now() + interval '1 hour') RETURNING max_attempts`
    expect(r!.max_attempts).toBe(25)
  })
})
