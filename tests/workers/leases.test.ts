import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type postgres from 'postgres'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { CREATE_ABORTS_TABLE, CREATE_RUNS_TABLE, sqlClient } from '../helpers/engine'
import { type ServerProcess, startServerProcess } from '../helpers/server'
import { type WorkerProcess as WorkerInfo, workersOf } from '../helpers/workers'
import { startTcpProxy, type TcpProxy } from '../helpers/tcpProxy'
import { waitFor } from '../helpers/wait'

/**
 * Leases with real processes: a job runs on one worker at a time even when its worker freezes (SIGSTOP),
 * loses the database (a TCP black hole), has its handler pool exhausted, or holds rows it never heard of.
 */
let db: TestDatabase
let sql: postgres.Sql

const QUIET = { CRON_REMOVE_OLD_WORKER_JOBS: 'off' }
const LEASE_EXPIRED = 'lease expired: its worker stopped responding'

beforeAll(async () => {
  db = await createTestDatabase('leases')
  sql = sqlClient(db.url)
  await sql.unsafe(CREATE_RUNS_TABLE)
  await sql.unsafe(CREATE_ABORTS_TABLE)
})
afterAll(async () => {
  await sql.end()
  await db.drop()
})

async function insertJobs(client: postgres.Sql, type: string, data: unknown, count: number): Promise<number[]> {
  const rows = await client`INSERT INTO worker_jobs (type, user_id, due, data)
    SELECT ${type}, 0, now(), ${client.json(data as postgres.JSONValue)}::jsonb FROM generate_series(1, ${count}) RETURNING id`
  return rows.map((r) => Number(r.id)).sort((x, y) => x - y)
}

interface Run {
  job_id: string
  pid: number
  started_at: Date
  ended_at: Date
}

/** Pairs of completed runs of the same job, from different processes, whose intervals intersect. */
function overlappingRuns(runs: readonly Run[]): [Run, Run][] {
  const out: [Run, Run][] = []
  for (let i = 0; i < runs.length; i++) {
    for (let j = i + 1; j < runs.length; j++) {
      const a = runs[i]!
      const b = runs[j]!
      if (a.job_id !== b.job_id || a.pid === b.pid) continue
      if (a.started_at.getTime() < b.ended_at.getTime() && b.started_at.getTime() < a.ended_at.getTime()) out.push([a, b])
    }
  }
  return out
}

// These three mostly wait (on sleeping handlers and on leases running out), so they run side by side. The
// last two share a server on a database of their own, so that it never claims the first one's jobs.
describe.concurrent('leases', () => {
  /** A server with lease 2 s and a handler pool of one connection, for the last two tests (the first has its own). */
  let server: ServerProcess
  let poolDb: TestDatabase
  let psql: postgres.Sql
  beforeAll(async () => {
    poolDb = await createTestDatabase('leases_pool')
    psql = sqlClient(poolDb.url)
    server = await startServerProcess({
      DATABASE_URL: poolDb.url,
      WORKER_COUNT: '1',
      WORKER_LEASE_MS: '2000',
      WORKER_DB_POOL_SIZE: '1',
      ...QUIET,
    })
  })
  afterAll(async () => {
    await server?.stop('SIGTERM')
    await psql?.end()
    await poolDb?.drop()
  })

  // Regression: the child's deadline only fired when a renewal query answered, so a child that resumed
  // after its jobs had been rescued and re-run elsewhere ran every one of them to the end as well (two
  // runs of the same job at once).
  test('a child frozen by SIGSTOP aborts all its jobs when it resumes; each job completed exactly once, on the other child', async () => {
    const startsFile = join(mkdtempSync(join(tmpdir(), 'sigstop-')), 'starts')
    const pair = await startServerProcess({
      DATABASE_URL: db.url,
      WORKER_COUNT: '2',
      WORKER_LEASE_MS: '2000',
      WORKER_POLL_INTERVAL_MS: '60000',
      TEST_STARTS_FILE: startsFile,
      ...QUIET,
    })
    let frozen: number | null = null
    try {
      const ids = await insertJobs(sql, 'watchful', { ms: 8000 }, 10)
      // Their handlers, not only the claims: a claim that committed but whose answer came after its 1 s
      // deadline (a loaded machine, a fresh child) is never started by that child (its rows go back to
      // pending later), and a frozen child with no running handler has nothing to abort.
      await waitFor(() => existsSync(startsFile) && new Set(readFileSync(startsFile, 'utf8').trim().split('\n')).size === ids.length, {
        timeoutMs: 10_000,
        what: 'the 10 handlers to start',
      })
      const running = await waitFor(
        async () => {
          const rows = await sql`SELECT id, locked_by FROM worker_jobs WHERE id IN ${sql(ids)} AND started IS NOT NULL AND finished IS NULL`
          return rows.length === ids.length ? rows : null
        },
        { timeoutMs: 5000, what: 'all 10 jobs to start' },
      )
      const workers = await workersOf(pair)
      expect(workers).toHaveLength(2)
      const held = (w: WorkerInfo) => running.filter((r) => r.locked_by === w.id).map((r) => Number(r.id))
      const [victim, other] = [...workers].sort((a, b) => held(b).length - held(a).length) as [WorkerInfo, WorkerInfo]
      const victimIds = held(victim).sort((x, y) => x - y)
      expect(victimIds.length + held(other).length).toBe(10)
      expect(victimIds.length).toBeGreaterThanOrEqual(5)

      process.kill(victim.pid, 'SIGSTOP')
      frozen = victim.pid
      const frozenAt = Date.now()
      // The manager sees the leases run out and returns the rows to pending; the other child runs them.
      const rescued = await waitFor(
        async () => {
          const rows = await sql`SELECT id, attempt, locked_by, last_error FROM worker_jobs
            WHERE id IN ${sql(victimIds)} AND attempt = 2 AND started IS NOT NULL AND finished IS NULL AND locked_by = ${other.id}`
          return rows.length === victimIds.length ? rows : null
        },
        { timeoutMs: 10_000, what: "the frozen child's jobs to be rescued and started by the other child" },
      )
      const rescuedAfterMs = Date.now() - frozenAt
      expect(rescued.every((r) => r.last_error === LEASE_EXPIRED)).toBe(true)

      process.kill(victim.pid, 'SIGCONT')
      frozen = null
      const resumedAt = Date.now()

      // The resumed child aborts every job it still believes it holds: each handler saw its signal fire.
      const aborts = await waitFor(
        async () => {
          const rows = await sql`SELECT job_id, attempt, reason FROM test_job_aborts WHERE pid = ${victim.pid} ORDER BY job_id`
          return rows.length >= victimIds.length ? rows : null
        },
        { timeoutMs: 5000, what: "the resumed child's handlers to see their signals abort" },
      )
      expect(aborts.map((r) => Number(r.job_id))).toEqual(victimIds)
      for (const a of aborts) {
        expect(a.attempt).toBe(1)
        expect(a.reason).toStartWith('lease lost')
      }
      // Each of its runs ended as an interruption, never as a completed run.
      const ended = await waitFor(
        () => {
          const lines = pair.logs.filter((l) => l.pid === victim.pid && l.msg === 'job finished' && victimIds.includes(l.jobId))
          return lines.length === victimIds.length ? lines : null
        },
        { timeoutMs: 5000, what: "the resumed child's runs to end" },
      )
      for (const l of ended) {
        expect(l.success).toBe(false)
        expect(l.error).toStartWith('lease lost')
      }
      const abortedAfterMs = Math.max(...ended.map((l) => l.time)) - resumedAt
      expect(abortedAfterMs).toBeLessThan(1000)

      // In the end every job finished successfully exactly once, the rescued ones on the other child.
      const done = await waitFor(
        async () => {
          const rows = await sql`SELECT id, success, attempt, locked_by FROM worker_jobs WHERE id IN ${sql(ids)} AND finished IS NOT NULL ORDER BY id`
          return rows.length === ids.length ? rows : null
        },
        { timeoutMs: 20_000, what: 'all 10 jobs to finish' },
      )
      expect(done.every((r) => r.success === true)).toBe(true)
      for (const r of done.filter((r) => victimIds.includes(Number(r.id)))) {
        expect(r.locked_by).toBe(other.id)
        expect(r.attempt).toBe(2)
      }
      const runs = (await sql`SELECT job_id, pid, started_at, ended_at FROM test_job_runs WHERE job_id IN ${sql(ids)}`) as unknown as Run[]
      expect(overlappingRuns(runs)).toEqual([])
      expect(runs.map((r) => Number(r.job_id)).sort((x, y) => x - y)).toEqual(ids)
      expect(runs.filter((r) => victimIds.includes(Number(r.job_id))).every((r) => r.pid === other.pid)).toBe(true)
      console.log(`[leases] SIGSTOP: ${victimIds.length} jobs rescued ${rescuedAfterMs} ms after the freeze; aborted ${abortedAfterMs} ms after SIGCONT`)
    } finally {
      if (frozen !== null) process.kill(frozen, 'SIGCONT')
      await pair.stop('SIGTERM')
    }
  }, 45_000)

  // Regression: handlers and heartbeats shared one 3-connection pool, so a handler holding its
  // connections starved the lease renewal and its own job was rescued (and run again) while it ran.
  test('a handler that exhausts the handler pool does not starve the heartbeat', async () => {
    const [id] = await insertJobs(psql, 'hog', { conns: 3, ms: 5000 }, 1)
    // Finished, or interrupted once (then it is back to pending with attempt 2, and the test fails below).
    const done = await waitFor(
      async () =>
        (await psql`SELECT *, extract(epoch FROM finished - started) * 1000 AS ran_ms FROM worker_jobs
          WHERE id = ${id!} AND (finished IS NOT NULL OR attempt > 1)`)[0],
      { timeoutMs: 25_000, intervalMs: 100, what: 'the hog job to finish' },
    )
    expect(done.last_error).toBeNull()
    expect(done.attempt).toBe(1)
    expect(done.result).toEqual({ held: 3 })
    expect(done.success).toBe(true)
    // Three 5 s sleeps through one connection: the pool was exhausted (with waiters) for 7 leases' worth.
    expect(Number(done.ran_ms)).toBeGreaterThanOrEqual(15_000)
    expect(server.logs.filter((l) => l.jobId === id && l.msg === 'job started')).toHaveLength(1)
    expect(server.logs.filter((l) => l.msg === 'lease not renewed in time; aborting the job')).toEqual([])
    expect(server.logs.filter((l) => l.msg === 'rescued interrupted jobs' && l.released?.includes(id))).toEqual([])
  }, 30_000)

  // Regression: the heartbeat renewed every row locked_by the worker, so rows a claim had locked for it
  // but whose reply never arrived (or any row naming it) kept their lease forever and never ran.
  test('rows locked by the live child that it never received go back to pending and run exactly once', async () => {
    const [child] = await workersOf(server)
    // The child is busy (its heartbeat renews what it holds) while the rows it never received sit there.
    const [busy] = await insertJobs(psql, 'sleep', { ms: 7000 }, 1)
    await waitFor(async () => (await psql`SELECT 1 FROM worker_jobs WHERE id = ${busy!} AND locked_by = ${child!.id}`)[0], {
      timeoutMs: 5000,
      what: 'the child to be running a job',
    })
    const rows = await psql`INSERT INTO worker_jobs (type, user_id, due, started, locked_by, lease_expires_at)
      SELECT 'noop', 0, now(), now(), ${child!.id}, now() + interval '2 seconds' FROM generate_series(1, 3) RETURNING id`
    const insertedAt = Date.now()
    const ids = rows.map((r) => Number(r.id)).sort((x, y) => x - y)
    const seenPending = new Set<number>()
    await waitFor(
      async () => {
        const back = await psql`SELECT id FROM worker_jobs WHERE id IN ${psql(ids)} AND started IS NULL AND finished IS NULL AND attempt = 2`
        for (const r of back) seenPending.add(Number(r.id))
        return seenPending.size === ids.length
      },
      { timeoutMs: 2000 + 3000, what: 'the unknown rows to go back to pending' },
    )
    const releasedAfterMs = Date.now() - insertedAt
    const done = await waitFor(
      async () => {
        const r = await psql`SELECT id, success, attempt, last_error, locked_by FROM worker_jobs WHERE id IN ${psql(ids)} AND finished IS NOT NULL ORDER BY id`
        return r.length === ids.length ? r : null
      },
      { timeoutMs: 5000, what: 'the released rows to run' },
    )
    for (const r of done) expect([r.success, r.attempt, r.last_error, r.locked_by]).toEqual([true, 2, LEASE_EXPIRED, child!.id])
    const starts = server.logs.filter((l) => l.msg === 'job started' && ids.includes(l.jobId))
    expect(starts.map((l) => l.jobId).sort((x, y) => x - y)).toEqual(ids)
    expect(starts.every((l) => l.attempt === 2)).toBe(true)
    expect((await psql`SELECT count(*)::int AS n FROM worker_jobs WHERE rescheduled_from_job IN ${psql(ids)}`)[0]!.n).toBe(0)
    // The busy job was renewed all along and is still its first run.
    const [kept] = await psql`SELECT attempt, finished IS NULL AS running FROM worker_jobs WHERE id = ${busy!}`
    expect([kept!.attempt, kept!.running]).toEqual([1, true])
    console.log(`[leases] unknown claimed rows back to pending after ${releasedAfterMs} ms`)
  }, 20_000)
})

describe('a database black hole', () => {
  // Regression: the renewal's await never returned while the database was unreachable (no error, no
  // answer), and the deadline was only checked after it, so nothing was ever aborted: the jobs ran on
  // while another server re-ran them.
  test('the child aborts its jobs by its own deadline; another server rescues them and runs them once', async () => {
    const proxy: TcpProxy = await startTcpProxy()
    let a: ServerProcess | null = null
    let b: ServerProcess | null = null
    const startsFile = join(mkdtempSync(join(tmpdir(), 'blackhole-')), 'starts')
    try {
      a = await startServerProcess({
        DATABASE_URL: proxy.urlThrough(db.url),
        WORKER_COUNT: '1',
        WORKER_LEASE_MS: '3000',
        WORKER_POLL_INTERVAL_MS: '60000',
        TEST_STARTS_FILE: startsFile,
        ...QUIET,
      })
      const [aChild] = await workersOf(a)
      const ids = await insertJobs(sql, 'watchful', { ms: 20_000 }, 5)
      await waitFor(
        async () => {
          const rows = await sql`SELECT id FROM worker_jobs WHERE id IN ${sql(ids)} AND started IS NOT NULL AND locked_by = ${aChild!.id}`
          return rows.length === ids.length
        },
        { timeoutMs: 5000, what: 'the 5 jobs to start on A' },
      )
      // Their handlers too, not only the claim: the claim's reply comes back through the proxy, and a black
      // hole that swallowed it would leave the child with nothing to abort.
      await waitFor(() => existsSync(startsFile) && readFileSync(startsFile, 'utf8').trim().split('\n').length === ids.length, {
        what: "the 5 handlers to start on A",
      })

      expect(proxy.accepted).toBeGreaterThan(0) // A's connections do go through the proxy
      proxy.blackhole()
      const holedAt = Date.now()
      // Still black-holed: the child's own timer fires every handler's signal, and its logs (stdout) say so.
      const seen = await waitFor(
        () => {
          const lines = a!.logs.filter((l) => l.msg === 'handler saw its signal abort' && ids.includes(l.jobId))
          return lines.length >= ids.length ? lines : null
        },
        { timeoutMs: 3000 + 2000, what: "A's handlers to see their signals abort" },
      )
      expect(seen.map((l) => l.jobId).sort((x, y) => x - y)).toEqual(ids)
      for (const l of seen) {
        expect(l.pid).toBe(aChild!.pid)
        expect(l.reason).toStartWith('lease lost')
        expect(l.time - holedAt).toBeLessThan(3000 + 2000)
      }
      const abortedAfterMs = Math.max(...seen.map((l) => l.time)) - holedAt

      // Seen from outside (a direct client): A could write nothing, so the rows are still A's, with expired leases.
      const expired = await waitFor(
        async () => {
          const rows = await sql`SELECT id, attempt FROM worker_jobs WHERE id IN ${sql(ids)} AND started IS NOT NULL
            AND finished IS NULL AND locked_by = ${aChild!.id} AND lease_expires_at < now()`
          return rows.length === ids.length ? rows : null
        },
        { timeoutMs: 5000, what: "the rows' leases to expire" },
      )
      expect(expired.every((r) => r.attempt === 1)).toBe(true)

      // Server B, straight on the database, rescues them and runs them again.
      b = await startServerProcess({ DATABASE_URL: db.url, WORKER_COUNT: '1', WORKER_LEASE_MS: '3000', ...QUIET })
      const [bChild] = await workersOf(b)
      const rerun = await waitFor(
        async () => {
          const rows = await sql`SELECT id, last_error FROM worker_jobs WHERE id IN ${sql(ids)} AND attempt = 2
            AND started IS NOT NULL AND locked_by = ${bChild!.id}`
          return rows.length === ids.length ? rows : null
        },
        { timeoutMs: 5000, what: 'B to rescue and start the jobs' },
      )
      expect(rerun.every((r) => r.last_error === LEASE_EXPIRED)).toBe(true)
      const done = await waitFor(
        async () => {
          const rows = await sql`SELECT id, success, attempt, locked_by FROM worker_jobs WHERE id IN ${sql(ids)} AND finished IS NOT NULL`
          return rows.length === ids.length ? rows : null
        },
        { timeoutMs: 30_000, what: 'the jobs to finish on B' },
      )
      for (const r of done) expect([r.success, r.attempt, r.locked_by]).toEqual([true, 2, bChild!.id])

      // Heal: A's writes held in the network arrive late and change nothing (every one is fenced by locked_by).
      proxy.heal()
      const stopAt = Date.now()
      const code = await Promise.race([a.stop('SIGTERM'), new Promise<'stuck'>((r) => setTimeout(() => r('stuck'), 20_000))])
      const stopMs = Date.now() - stopAt
      if (code === 'stuck') await a.stop('SIGKILL')
      const aLogs = a.logs
      a = null
      expect(code).toBe(0) // A stops cleanly once healed
      // A's outcome writes (interruptions) went out after the heal and were refused by the locked_by fence.
      const refused = aLogs.filter((l) => l.pid === aChild!.pid && l.msg === 'outcomes not recorded: jobs were rescued by another worker first')
      expect(refused.reduce((n, l) => n + l.lost, 0)).toBe(ids.length)
      const after = await sql`SELECT id, success, attempt, locked_by FROM worker_jobs WHERE id IN ${sql(ids)} ORDER BY id`
      for (const r of after) expect([r.success, r.attempt, r.locked_by]).toEqual([true, 2, bChild!.id])
      const runs = (await sql`SELECT job_id, pid, started_at, ended_at FROM test_job_runs WHERE job_id IN ${sql(ids)}`) as unknown as Run[]
      expect(runs.map((r) => Number(r.job_id)).sort((x, y) => x - y)).toEqual(ids)
      expect(runs.every((r) => r.pid === bChild!.pid)).toBe(true)
      console.log(`[leases] black hole: all 5 aborted ${abortedAfterMs} ms after the database vanished; A stopped ${code === 'stuck' ? 'only with SIGKILL' : `cleanly (exit ${code}) ${stopMs} ms after SIGTERM`}`)
    } finally {
      await a?.stop('SIGKILL')
      await b?.stop('SIGTERM')
      await proxy.close()
    }
  }, 60_000)
})

