import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type postgres from 'postgres'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { CREATE_ABORTS_TABLE, CREATE_RUNS_TABLE, sqlClient } from '../helpers/engine'
import { type ServerProcess, startServerProcess } from '../helpers/server'
import { workersOf } from '../helpers/workers'
import { waitFor } from '../helpers/wait'

/**
 * A whole server dies without a word (SIGKILL of its main process and its child at once), with the
 * DEFAULT lease settings: another server on the same database returns its jobs to pending and runs them,
 * and a per-second cron job running on the cluster carries on.
 *
 * Regression: with the old defaults (a 30 s lease, and a rescue sweep only every lease/2 = 15 s) a dead
 * server's jobs sat for about 41 s before another server ran them, and a cron chain the dead server held
 * stopped as long. Now: a 10 s lease and a sweep every second, so about 11 s.
 */
let db: TestDatabase
let sql: postgres.Sql

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

beforeAll(async () => {
  db = await createTestDatabase('deadserver')
  sql = sqlClient(db.url)
  await sql.unsafe(CREATE_RUNS_TABLE)
  await sql.unsafe(CREATE_ABORTS_TABLE)
})
afterAll(async () => {
  await sql.end()
  await db.drop()
})

async function firstWorker(server: ServerProcess): Promise<{ id: string; pid: number }> {
  return (await workersOf(server))[0]!
}

describe('a dead server', () => {
  test("another server rescues its jobs within 15 s of the kill, and a per-second cron keeps running", async () => {
    const env = { DATABASE_URL: db.url, WORKER_COUNT: '1', CRON_REMOVE_OLD_WORKER_JOBS: 'off' } // default WORKER_LEASE_MS
    let a: ServerProcess | null = await startServerProcess(env)
    let b: ServerProcess | null = null
    const pids: number[] = []
    try {
      const aChild = await firstWorker(a)
      pids.push(a.proc.pid, aChild.pid)
      const jobs = await sql`INSERT INTO worker_jobs (type, user_id, due, data)
        SELECT 'watchful', 0, now(), '{"ms": 60000}'::jsonb FROM generate_series(1, 3) RETURNING id`
      const ids = jobs.map((r) => Number(r.id)).sort((x, y) => x - y)
      await waitFor(
        async () => (await sql`SELECT id FROM worker_jobs WHERE id IN ${sql(ids)} AND started IS NOT NULL AND locked_by = ${aChild.id}`).length === 3,
        { timeoutMs: 5000, what: 'the 3 long jobs to start on A' },
      )
      // Only now B: A holds the long jobs.
      b = await startServerProcess({ ...env, WORKER_SHUTDOWN_TIMEOUT_MS: '1000' })
      const bChild = await firstWorker(b)

      // A per-second cron job on the cluster (either server may run each occurrence).
      const [cron] = await sql`INSERT INTO worker_jobs (type, user_id, due, cron_schedule) VALUES ('noop', 0, now(), '* * * * * *') RETURNING id`
      const chain = () => sql`SELECT id, started, finished, locked_by FROM worker_jobs
        WHERE type = 'noop' AND cron_schedule = '* * * * * *' AND id >= ${cron!.id} AND finished IS NOT NULL ORDER BY finished`
      await waitFor(async () => (await chain()).length >= 3, { timeoutMs: 6000, intervalMs: 50, what: 'the cron job to run a few times' })

      // The whole of A at once: its main process cannot fail the child's jobs, and the child cannot drain.
      const killedAt = Date.now()
      process.kill(a.proc.pid, 'SIGKILL')
      process.kill(aChild.pid, 'SIGKILL')
      await waitFor(() => !alive(a!.proc.pid) && !alive(aChild.pid), { timeoutMs: 3000, what: 'A to be dead' })
      await a.proc.exited
      a = null

      // B sees the leases run out, returns the rows to pending and runs them.
      const rescued = await waitFor(
        async () => {
          const rows = await sql`SELECT id, started, attempt, last_error, locked_by FROM worker_jobs
            WHERE id IN ${sql(ids)} AND attempt = 2 AND started IS NOT NULL AND locked_by = ${bChild.id}`
          return rows.length === 3 ? rows : null
        },
        { timeoutMs: 20_000, intervalMs: 50, what: "B to rescue and start A's jobs" },
      )
      const startedAfter = rescued.map((r) => new Date(r.started).getTime() - killedAt)
      console.log(`[deadServer] A's jobs started on B ${startedAfter.join(', ')} ms after the kill`)
      for (const r of rescued) {
        expect(r.last_error).toStartWith('lease expired')
        expect(r.last_error).toBe('lease expired: its worker stopped responding')
      }
      for (const ms of startedAfter) expect(ms).toBeLessThan(15_000)

      // A couple more cron seconds after the rescue, then look at the whole chain for gaps.
      const rescuedAt = Math.max(...rescued.map((r) => new Date(r.started).getTime()))
      await waitFor(async () => (await chain()).some((r) => new Date(r.finished).getTime() > rescuedAt + 2000), {
        timeoutMs: 6000,
        intervalMs: 50,
        what: 'the cron job to run after the rescue',
      })
      const runs = await chain()
      const finishedAt = runs.map((r) => new Date(r.finished).getTime())
      const gaps = finishedAt.slice(1).map((t, i) => t - finishedAt[i]!)
      const maxGap = Math.max(...gaps)
      console.log(`[deadServer] cron: ${runs.length} runs, largest gap between two finished runs ${maxGap} ms`)
      expect(finishedAt[0]!).toBeLessThan(killedAt)
      expect(finishedAt.at(-1)!).toBeGreaterThan(rescuedAt)
      expect(runs.some((r) => r.locked_by === bChild.id && new Date(r.started).getTime() > killedAt)).toBe(true)
      expect(maxGap).toBeLessThanOrEqual(15_000)
      // Exactly one chain: one pending successor, never two.
      const [pending] = await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE type = 'noop' AND cron_schedule = '* * * * * *' AND finished IS NULL`
      expect(pending!.n).toBe(1)
    } finally {
      for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL')
      await b?.stop('SIGTERM')
    }
  }, 50_000)
})
