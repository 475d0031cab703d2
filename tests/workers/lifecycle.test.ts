import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type postgres from 'postgres'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { sqlClient, startTestServer } from '../helpers/engine'
import { startServerProcess } from '../helpers/server'
import { startTcpProxy } from '../helpers/tcpProxy'
import { workerHealth } from '../helpers/workers'
import { waitFor } from '../helpers/wait'

let db: TestDatabase
let sql: postgres.Sql

beforeAll(async () => {
  db = await createTestDatabase('lifecycle')
  sql = sqlClient(db.url)
})
afterAll(async () => {
  await sql.end()
  await db.drop()
})

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

describe('cron seeding', () => {
  test('two servers booting at once leave exactly one pending row per cron tag; a reboot keeps it', async () => {
    await sql`TRUNCATE worker_jobs`
    const env = { WORKER_COUNT: '0', CRON_WATCH_CHAIN: '*/30 * * * * *', CRON_REMOVE_OLD_WORKER_JOBS: '0 2 * * *' }
    const servers = await Promise.all([startTestServer(db.url, env), startTestServer(db.url, env), startTestServer(db.url, env)])
    await Promise.all(servers.map((s) => s.stop()))
    const rows = await sql`SELECT tag, cron_schedule, count(*)::int AS n FROM worker_jobs
      WHERE started IS NULL AND finished IS NULL GROUP BY tag, cron_schedule ORDER BY tag`
    expect(rows.map((r) => [r.tag, r.cron_schedule, r.n])).toEqual([
      ['system:removeOldWorkerJobs', '0 2 * * *', 1],
      ['system:watchChain', '*/30 * * * * *', 1],
    ])
    const [total] = await sql`SELECT count(*)::int AS n FROM worker_jobs`
    expect(total!.n).toBe(2)
    // A reboot with a changed schedule moves the pending row instead of adding one.
    const again = await startTestServer(db.url, { ...env, CRON_REMOVE_OLD_WORKER_JOBS: '30 3 * * *' })
    await again.stop()
    const after = await sql`SELECT tag, cron_schedule FROM worker_jobs ORDER BY tag`
    expect(after.map((r) => [r.tag, r.cron_schedule])).toEqual([
      ['system:removeOldWorkerJobs', '30 3 * * *'],
      ['system:watchChain', '*/30 * * * * *'],
    ])
  }, 30_000)

  test('deployMulticall3 is submitted once per boot, deduplicated by its tag', async () => {
    await sql`TRUNCATE worker_jobs`
    const env = { WORKER_COUNT: '0', DEPLOY_MULTICALL3_ON_BOOT: 'true', CRON_REMOVE_OLD_WORKER_JOBS: 'off' }
    for (let i = 0; i < 2; i++) await (await startTestServer(db.url, env)).stop()
    const rows = await sql`SELECT type, tag, finished, result FROM worker_jobs ORDER BY id`
    expect(rows.map((r) => r.type)).toEqual(['deployMulticall3', 'deployMulticall3'])
    expect(rows[0]!.finished).not.toBeNull()
    expect(rows[0]!.result.error).toMatch(/^cancelled: replaced by job \d+$/)
    expect(rows[1]!.finished).toBeNull()
  }, 20_000)
})

describe('removeOldWorkerJobs', () => {
  test('deletes finished, non-persistent rows past remove_at, and nothing else', async () => {
    await sql`TRUNCATE worker_jobs`
    await sql`INSERT INTO worker_jobs (type, user_id, due, started, finished, success, remove_at, persistent, tag) VALUES
      ('noop', 0, now(), now(), now(), true,  now() - interval '1 second', false, 'expired-1'),
      ('noop', 0, now(), now(), now(), false, now() - interval '1 day',    false, 'expired-2'),
      ('noop', 0, now(), now(), now(), true,  now() - interval '1 day',    true,  'persistent'),
      ('noop', 0, now(), now(), now(), true,  now() + interval '1 hour',   false, 'not-yet'),
      ('noop', 0, now() + interval '1 hour', NULL, NULL, NULL, NULL, false, 'pending'),
      ('noop', 0, now(), now(), NULL, NULL, now() - interval '1 day', false, 'running')`
    // Many more expired rows than one batch, to exercise the batching.
    await sql`INSERT INTO worker_jobs (type, user_id, due, started, finished, success, remove_at)
      SELECT 'noop', 0, now(), now(), now(), true, now() - interval '1 minute' FROM generate_series(1, 2500)`
    const server = await startTestServer(db.url, { WORKER_COUNT: '1', CRON_REMOVE_OLD_WORKER_JOBS: 'off' })
    try {
      const job = await server.workerManager.submitJob({ type: 'removeOldWorkerJobs', data: { batchSize: 1000 } })
      const done = await waitFor(async () => (await sql`SELECT * FROM worker_jobs WHERE id = ${job.id} AND finished IS NOT NULL`)[0], {
        what: 'cleanup',
      })
      expect(done.success).toBe(true)
      expect(done.result).toEqual({ deletedCount: 2502, prunedChainEvents: 0, prunedSends: 0 })
    } finally {
      await server.stop()
    }
    const left = await sql`SELECT tag FROM worker_jobs WHERE type = 'noop' ORDER BY tag`
    expect(left.map((r) => r.tag)).toEqual(['not-yet', 'pending', 'persistent', 'running'])
  }, 20_000)
})

describe('shutdown', () => {
  test('SIGTERM lets a running job finish, then every process exits', async () => {
    await sql`TRUNCATE worker_jobs`
    const server = await startServerProcess({ DATABASE_URL: db.url, WORKER_COUNT: '2', CRON_REMOVE_OLD_WORKER_JOBS: 'off' })
    const health = await workerHealth(server)
    const pids: number[] = health.workers.map((w) => w.pid)
    expect(pids).toHaveLength(2)
    const [job] = await sql`INSERT INTO worker_jobs (type, user_id, due, data) VALUES ('sleep', 0, now(), '{"ms": 1500}') RETURNING id`
    await waitFor(async () => (await sql`SELECT 1 FROM worker_jobs WHERE id = ${job!.id} AND started IS NOT NULL`)[0], { what: 'start' })
    expect(await server.stop('SIGTERM')).toBe(0)
    const [done] = await sql`SELECT * FROM worker_jobs WHERE id = ${job!.id}`
    expect(done!.success).toBe(true)
    expect(done!.result).toEqual({ slept: 1500 })
    await waitFor(() => pids.every((p) => !alive(p)), { timeoutMs: 3000, what: 'children to exit' })
    // One JSON line when the job starts and one when it ends, each naming the job, its type and worker.
    const id = Number(job!.id)
    const started = server.logs.filter((l) => l.jobId === id && l.msg === 'job started')
    const ended = server.logs.filter((l) => l.jobId === id && l.msg === 'job finished')
    expect(started).toHaveLength(1)
    expect(ended).toHaveLength(1)
    expect(started[0]).toMatchObject({ type: 'sleep', workerId: done!.locked_by })
    expect(ended[0]).toMatchObject({ type: 'sleep', workerId: done!.locked_by, success: true })
    expect(ended[0]!.durationMs).toBeGreaterThanOrEqual(1500)
  }, 20_000)

  test('a job that outlives the shutdown deadline is aborted and goes back to pending, and nothing is left running', async () => {
    await sql`TRUNCATE worker_jobs`
    const server = await startServerProcess({
      DATABASE_URL: db.url,
      WORKER_COUNT: '1',
      WORKER_SHUTDOWN_TIMEOUT_MS: '500',
      CRON_REMOVE_OLD_WORKER_JOBS: 'off',
    })
    const health = await workerHealth(server)
    const [job] = await sql`INSERT INTO worker_jobs (type, user_id, due, data) VALUES ('sleep', 0, now(), '{"ms": 60000}') RETURNING id`
    await waitFor(async () => (await sql`SELECT 1 FROM worker_jobs WHERE id = ${job!.id} AND started IS NOT NULL`)[0], { what: 'start' })
    expect(await server.stop('SIGTERM')).toBe(0)
    const [done] = await sql`SELECT * FROM worker_jobs WHERE id = ${job!.id}`
    // Our own shutdown is not the job's failure: it runs again on the next server.
    expect(done!.finished).toBeNull()
    expect(done!.started).toBeNull()
    expect(done!.attempt).toBe(2)
    expect(done!.last_error).toBe('interrupted: the server is shutting down')
    expect(alive(health.workers[0]!.pid)).toBe(false)
  }, 20_000)

  test('a child exits on its own when its parent dies (no orphans)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'orphan-'))
    const files = { TEST_STARTS_FILE: join(dir, 'starts'), TEST_ABORTS_FILE: join(dir, 'aborts') }
    const read = (f: string) => (existsSync(f) ? readFileSync(f, 'utf8') : '')
    const server = await startServerProcess({ DATABASE_URL: db.url, WORKER_COUNT: '2', CRON_REMOVE_OLD_WORKER_JOBS: 'off', ...files })
    const health = await workerHealth(server)
    const pids: number[] = health.workers.map((w) => w.pid)
    expect(pids.every(alive)).toBe(true)
    // A long job is running (its handler started, not only claimed) when the parent dies: the orphan must not wait for it.
    await sql`TRUNCATE worker_jobs`
    const [job] = await sql`INSERT INTO worker_jobs (type, user_id, due, data) VALUES ('watchful', 0, now(), '{"ms": 60000}') RETURNING id`
    await waitFor(() => read(files.TEST_STARTS_FILE) === `${job!.id}\n`, { what: 'the handler to start' })
    await server.stop('SIGKILL')
    // Both orphans exit well before their 5 s deadline: the idle one may have had a claim in flight (the
    // running one's release NOTIFYs it), and a job claimed after the abort never runs.
    await waitFor(() => pids.every((p) => !alive(p)), { timeoutMs: 4000, what: 'orphaned children to exit' })
    // It aborted the job and recorded it as interrupted: back to pending, to run again, and it ran once.
    const [row] = await sql`SELECT started, finished, locked_by, attempt, last_error FROM worker_jobs WHERE id = ${job!.id}`
    expect(row).toEqual({ started: null, finished: null, locked_by: null, attempt: 2, last_error: 'interrupted: the server process is gone' })
    expect(read(files.TEST_STARTS_FILE)).toBe(`${job!.id}\n`)
    expect(read(files.TEST_ABORTS_FILE)).toContain('interrupted: the server process is gone')
  }, 20_000)
})

describe('rescue with the database away', () => {
  test("a child killed while its manager cannot reach the database has its jobs rescued as soon as it can, not a lease later", async () => {
    // Before the server starts: the test before leaves a pending job it would claim at once.
    await sql`TRUNCATE worker_jobs`
    const proxy = await startTcpProxy()
    const dir = mkdtempSync(join(tmpdir(), 'rescue-'))
    const startsFile = join(dir, 'starts')
    const server = await startServerProcess({
      DATABASE_URL: proxy.urlThrough(db.url),
      WORKER_COUNT: '1',
      WORKER_LEASE_MS: '60000',
      DB_CONNECT_TIMEOUT_MS: '300',
      CRON_REMOVE_OLD_WORKER_JOBS: 'off',
      TEST_STARTS_FILE: startsFile,
    })
    try {
      const [child] = (await workerHealth(server)).workers.map((w) => w.pid as number)
      const [job] = await sql`INSERT INTO worker_jobs (type, user_id, due, data) VALUES ('watchful', 0, now(), '{"ms": 120000}') RETURNING id`
      await waitFor(() => existsSync(startsFile) && readFileSync(startsFile, 'utf8') === `${job!.id}\n`, { what: 'the handler to start' })
      // The database goes away for this server (every connection reset, new ones hang), then its child dies.
      proxy.blackhole('hold')
      proxy.resetAll()
      process.kill(child!, 'SIGKILL')
      await waitFor(() => server.logs.some((l) => l.msg === 'rescuing jobs failed; the next sweep retries' && l.reason === 'interrupted: its worker process exited'), {
        what: 'the exit rescue to fail',
      })
      proxy.heal()
      // Well inside the 60 s lease: only a retried exit rescue can have done it, with its own reason.
      await waitFor(
        async () => (await sql`SELECT 1 FROM worker_jobs WHERE id = ${job!.id} AND started IS NULL AND last_error = 'interrupted: its worker process exited'`).length === 1,
        { timeoutMs: 20_000, what: 'the job back to pending, as interrupted' },
      )
    } finally {
      await server.stop()
      await proxy.close()
    }
  }, 60_000)
})

