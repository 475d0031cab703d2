import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type postgres from 'postgres'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { CREATE_ABORTS_TABLE, CREATE_RUNS_TABLE, sqlClient, startTestServer } from '../helpers/engine'
import { waitFor } from '../helpers/wait'

/**
 * An interruption by the infrastructure is not the job's failure. Before: a SIGKILLed child's jobs, and
 * those of a forced stop, were failed for good unless they had autoRescheduleOnFailure, and no handler
 * ever saw its signal on a forced stop.
 */
let db: TestDatabase
let sql: postgres.Sql

// The watchful handlers append a line here, synchronously, when their signal fires (children inherit the env).
const abortsFile = join(mkdtempSync(join(tmpdir(), 'aborts-')), 'aborts.jsonl')
process.env.TEST_ABORTS_FILE = abortsFile

beforeAll(async () => {
  writeFileSync(abortsFile, '')
  db = await createTestDatabase('interrupt')
  sql = sqlClient(db.url)
  await sql.unsafe(CREATE_ABORTS_TABLE)
  await sql.unsafe(CREATE_RUNS_TABLE)
})
afterAll(async () => {
  await sql.end()
  await db.drop()
})

const quiet = { CRON_REMOVE_OLD_WORKER_JOBS: 'off', WORKER_POLL_INTERVAL_MS: '60000' }
const startedCount = async (ids: number[]) =>
  (await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE id = ANY(${ids}) AND started IS NOT NULL`)[0]!.n

describe('a forced stop', () => {
  test('fires every handler signal; rerunnable jobs go back to pending, a type that opts out fails', async () => {
    const server = await startTestServer(db.url, { ...quiet, WORKER_COUNT: '2', WORKER_SHUTDOWN_TIMEOUT_MS: '300' })
    let stopped = false
    try {
      const jobs = await server.workerManager.submitJobs([
        ...Array.from({ length: 4 }, () => ({ type: 'watchful', data: { ms: 60_000 } })),
        { type: 'onceOnly', data: { ms: 60_000 } },
      ])
      const ids = jobs.map((j) => j.id)
      await waitFor(async () => (await startedCount(ids)) === 5, { what: 'all five to start' })
      const t0 = Date.now()
      await server.stop()
      stopped = true
      // Drain deadline, then the abort: the handlers honour their signals, so no kill is needed.
      expect(Date.now() - t0).toBeLessThan(300 + 3000)
      const aborts = readFileSync(abortsFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { jobId: number; reason: string })
      expect(aborts.map((a) => a.jobId).sort((a, b) => a - b)).toEqual(ids.slice(0, 4))
      expect(aborts.every((a) => a.reason === 'interrupted: the server is shutting down')).toBe(true)
      const rows = await sql`SELECT * FROM worker_jobs WHERE id = ANY(${ids}) ORDER BY id`
      for (const r of rows.slice(0, 4)) {
        expect(r.started).toBeNull()
        expect(r.finished).toBeNull()
        expect(r.locked_by).toBeNull()
        expect(r.attempt).toBe(2)
        expect(r.last_error).toBe('interrupted: the server is shutting down')
      }
      const once = rows[4]!
      expect(once.success).toBe(false)
      expect(once.result.error).toBe('interrupted: the server is shutting down')
      expect((await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE started IS NOT NULL AND finished IS NULL`)[0]!.n).toBe(0)
    } finally {
      if (!stopped) await server.stop()
    }
  }, 30_000)

  test('the next server runs the interrupted jobs', async () => {
    await sql`UPDATE worker_jobs SET data = '{"ms": 0}' WHERE type = 'watchful' AND finished IS NULL`
    const server = await startTestServer(db.url, { ...quiet, WORKER_COUNT: '1' })
    try {
      await waitFor(async () => (await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE type = 'watchful' AND success`)[0]!.n === 4, {
        what: 'the four interrupted jobs to run',
      })
      const runs = await sql`SELECT job_id, count(*)::int AS n FROM test_job_runs GROUP BY job_id`
      expect(runs).toHaveLength(4)
      expect(runs.every((r) => r.n === 1)).toBe(true)
    } finally {
      await server.stop()
    }
  }, 30_000)
})

describe('a killed child', () => {
  test('a job of a type that opts out fails with the reason; a job with no attempts left fails too', async () => {
    const server = await startTestServer(db.url, { ...quiet, WORKER_COUNT: '1' })
    try {
      const once = await server.workerManager.submitJob({ type: 'onceOnly', data: { ms: 60_000 } })
      const last = await server.workerManager.submitJob({ type: 'watchful', data: { ms: 60_000 }, maxAttempts: 1 })
      await waitFor(async () => (await startedCount([once.id, last.id])) === 2, { what: 'both to start' })
      const pid = server.workerManager.statusWithoutCounts()[0]!.pid!
      process.kill(pid, 'SIGKILL')
      const rows = await waitFor(async () => {
        const r = await sql`SELECT * FROM worker_jobs WHERE id IN (${once.id}, ${last.id}) AND finished IS NOT NULL ORDER BY id`
        return r.length === 2 ? r : null
      }, { what: 'both to be failed' })
      expect(rows[0]!.success).toBe(false)
      expect(rows[0]!.result.error).toBe('interrupted: its worker process exited')
      expect(rows[1]!.success).toBe(false)
      expect(rows[1]!.result.error).toBe('interrupted: its worker process exited (attempt 1 of 1)')
    } finally {
      await server.stop()
    }
  }, 30_000)
})

describe('handlers without a timeout', () => {
  test('get WORKER_DEFAULT_JOB_TIMEOUT_MS, so a hung handler cannot hold a worker or a drain', async () => {
    const server = await startTestServer(db.url, { ...quiet, WORKER_COUNT: '1', WORKER_DEFAULT_JOB_TIMEOUT_MS: '1000' })
    try {
      const job = await server.workerManager.submitJob({ type: 'untimed' })
      const done = await waitFor(async () => (await sql`SELECT * FROM worker_jobs WHERE id = ${job.id} AND finished IS NOT NULL`)[0], {
        what: 'the timeout',
      })
      expect(done.success).toBe(false)
      expect(done.result.error).toBe('job timed out after 1000 ms')
    } finally {
      await server.stop()
    }
  }, 30_000)
})
