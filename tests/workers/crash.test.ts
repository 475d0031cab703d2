import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type postgres from 'postgres'
import type { RunningServer } from '../../src/server/boot'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { sqlClient, startTestServer } from '../helpers/engine'
import { waitFor } from '../helpers/wait'

/** Crash rules with real processes: a SIGKILLed child, and a lease left behind by a dead server. */
let db: TestDatabase
let server: RunningServer
let sql: postgres.Sql

beforeAll(async () => {
  db = await createTestDatabase('crash')
  sql = sqlClient(db.url)
  server = await startTestServer(db.url, { WORKER_COUNT: '2', WORKER_LEASE_MS: '2000', WORKER_POLL_INTERVAL_MS: '60000' })
})
afterAll(async () => {
  await server?.stop()
  await sql.end()
  await db.drop()
})

/** /health, each worker with its pid and id, which /health no longer names: the manager in this process has them. */
const health = async () => {
  const res = await fetch(`${server.url}/health`)
  const body = (await res.json()) as any
  const procs = server.workerManager.statusWithoutCounts()
  for (const w of body.workers) Object.assign(w, { pid: procs[w.index]!.pid, id: procs[w.index]!.id })
  return { code: res.status, body }
}

describe('a SIGKILLed child', () => {
  test('its job goes back to pending at once and runs again, the child comes back, /health shows one restart', async () => {
    const job = await server.workerManager.submitJob({
      type: 'sleep',
      data: { ms: 60_000 },
      autoRescheduleOnFailure: true,
      autoRescheduleOnFailureDelay: 3600,
    })
    const running = await waitFor(async () => (await sql`SELECT * FROM worker_jobs WHERE id = ${job.id} AND started IS NOT NULL`)[0], {
      what: 'the job to start',
    })
    const before = await health()
    const victim = before.body.workers.find((w: any) => w.id === running.locked_by)
    expect(victim).toBeDefined()
    expect(victim.runningJobs).toBe(1)
    const killedAt = Date.now()
    process.kill(victim.pid, 'SIGKILL')

    // An interruption is not the job's failure: the same row goes back to pending with attempt 2, at once.
    const back = await waitFor(async () => (await sql`SELECT * FROM worker_jobs WHERE id = ${job.id} AND attempt = 2`)[0], {
      timeoutMs: 5000,
      what: 'the job to be returned to pending',
    })
    expect(new Date(back.updated_at).getTime() - killedAt).toBeLessThan(1000)
    expect(back.finished).toBeNull()
    expect(back.last_error).toBe('interrupted: its worker process exited')
    // It runs again (on the surviving child or the restarted one), still as the same job.
    const rerun = await waitFor(async () => (await sql`SELECT * FROM worker_jobs WHERE id = ${job.id} AND started IS NOT NULL`)[0], {
      timeoutMs: 5000,
      what: 'the job to run again',
    })
    expect(rerun.locked_by).not.toBe(running.locked_by)
    expect((await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE type = 'sleep'`)[0]!.n).toBe(1)

    const after = await waitFor(
      async () => {
        const h = await health()
        const slot = h.body.workers.find((w: any) => w.restarts === 1)
        return h.code === 200 && slot?.alive ? h : null
      },
      { timeoutMs: 10_000, what: 'the child to come back' },
    )
    expect(after.body.status).toBe('ok')
    expect(after.body.workers).toHaveLength(2)
    expect(after.body.workers.every((w: any) => w.alive)).toBe(true)
    expect(after.body.workers.map((w: any) => w.restarts).sort()).toEqual([0, 1])
    const reborn = after.body.workers.find((w: any) => w.restarts === 1)
    expect(reborn.pid).not.toBe(victim.pid)
    expect(reborn.id).not.toBe(victim.id)
  }, 30_000)
})

describe('lease rescue', () => {
  test('a running row whose lease expired (its server died) goes back to pending and is run by a live server', async () => {
    // What a dead server leaves behind: a started row held by a worker that no longer exists.
    const [orphan] = await sql`INSERT INTO worker_jobs (type, user_id, due, started, locked_by, lease_expires_at,
        auto_reschedule_on_failure, persistent)
      VALUES ('noop', 0, now() - interval '1 minute', now() - interval '1 minute', 'dead-host/1/w0/x', now() - interval '1 second', true, true)
      RETURNING id`
    const id = Number(orphan!.id)
    const done = await waitFor(async () => (await sql`SELECT * FROM worker_jobs WHERE id = ${id} AND finished IS NOT NULL`)[0], {
      timeoutMs: 5000,
      what: 'the rescued job to run',
    })
    expect(done.success).toBe(true)
    expect(done.attempt).toBe(2)
    expect(done.last_error).toContain('lease expired')
    expect(done.locked_by).not.toBe('dead-host/1/w0/x')
    expect((await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE rescheduled_from_job = ${id}`)[0]!.n).toBe(0)
  })

  test('a live job keeps its lease through heartbeats and is not rescued', async () => {
    // Lease is 2 s; the job runs for 5 s, so only heartbeats keep it alive.
    const job = await server.workerManager.submitJob({ type: 'sleep', data: { ms: 5000 } })
    const done = await waitFor(async () => (await sql`SELECT * FROM worker_jobs WHERE id = ${job.id} AND finished IS NOT NULL`)[0], {
      timeoutMs: 15_000,
      what: 'the long job',
    })
    expect(done.success).toBe(true)
    expect(done.result).toEqual({ slept: 5000 })
  }, 20_000)
})

describe('a wedged child', () => {
  test('one that stops reporting (SIGSTOP) makes /health 503 with the reason, and ok again once it resumes', async () => {
    // Before, /health only asked whether the process existed: a worker that could not claim still said ok.
    const before = await health()
    expect(before.code).toBe(200)
    const victim = before.body.workers[0]
    process.kill(victim.pid, 'SIGSTOP')
    try {
      const bad = await waitFor(async () => {
        const h = await health()
        return h.code === 503 ? h : null
      }, { timeoutMs: 10_000, what: '/health to notice the stopped child' })
      const w = bad.body.workers.find((x: any) => x.id === victim.id)
      expect(w.alive).toBe(true)
      expect(w.healthy).toBe(false)
      expect(w.problem).toContain('no status report')
    } finally {
      process.kill(victim.pid, 'SIGCONT')
    }
    await waitFor(async () => (await health()).code === 200, { timeoutMs: 10_000, what: '/health to recover' })
  }, 30_000)
})
