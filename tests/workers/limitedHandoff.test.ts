import { afterAll, beforeAll, expect, test } from 'bun:test'
import type postgres from 'postgres'
import type { ServerApp } from '../../src/server/serverApp'
import { FinishBatcher } from '../../src/server/workers/finishBatcher'
import { claimJobs } from '../../src/server/workers/queue/claim'
import { claimLimited, limitOf } from '../../src/server/workers/queue/limits'
import { QueueDb } from '../../src/server/workers/queueDb'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { CREATE_RUNS_TABLE, sqlClient } from '../helpers/engine'
import { gate, interceptRun } from '../helpers/intercept'
import { appWith, loopOf } from '../helpers/loops'
import { waitFor } from '../helpers/wait'

/**
 * The hand-off between two jobs of a limit-1 type, inside a flood of ordinary jobs: the next job may only
 * start once the previous one's outcome is in its row, so nothing else should stand between the two.
 * Two waits did: the outcome waited for the write of a batch of ordinary outcomes already in flight, and
 * the job claimed first in a round waited for the round's later claims to return before it started.
 * Each test holds the ordinary work back (a gate on the queue's replies) and checks the limited job's
 * step happens meanwhile: on the old code it waited for the gate, and the test timed out.
 */
let db: TestDatabase
let sql: postgres.Sql
let app: ServerApp

beforeAll(async () => {
  db = await createTestDatabase('limited_handoff')
  sql = sqlClient(db.url)
  await sql.unsafe(CREATE_RUNS_TABLE)
  app = await appWith(db.url)
})
afterAll(async () => {
  await app.dbHandle.close()
  await sql.end()
  await db.drop()
})

/** Claims the one 'noop' row and the one 'serial' row the test inserted, as `workerId`. */
async function claimOneOfEach(queue: QueueDb, workerId: string) {
  const [plain] = await queue.run((d) => claimJobs(d, { workerId, limit: 1, leaseMs: 60_000, types: ['noop'] }))
  const serial = await queue.run((d) =>
    claimLimited(d, { workerId, limit: 1, leaseMs: 60_000, types: ['serial'], type: 'serial', limits: limitOf(app.registry.serial)! }),
  )
  expect(plain?.type).toBe('noop')
  expect(serial.jobs).toHaveLength(1)
  return { plain, serial }
}

/** The first statement fails as on a connection reset; the ones after it go through. */
function failFirst(call: number): void {
  if (call === 1) throw Object.assign(new Error('connection reset'), { code: 'ECONNRESET' })
}

test("an outcome that frees a limited slot is written while an ordinary batch's write is in flight", async () => {
  await sql`DELETE FROM worker_jobs`
  await sql`INSERT INTO worker_jobs (type, data) VALUES ('noop', '{}')`
  await sql`INSERT INTO worker_jobs (type, data, concurrency_key) VALUES ('serial', '{}', '')`
  const queue = new QueueDb(db.url, { max: 3 }, 10_000)
  const workerId = 'handoff/finisher'
  try {
    const { plain, serial } = await claimOneOfEach(queue, workerId)

    // The ordinary outcome's write reaches the database, and its reply is held.
    const g = gate()
    let ordinaryHeld = false
    interceptRun(queue, {
      after: async (r) => {
        if (r instanceof Map && r.has(plain!.id)) {
          ordinaryHeld = true
          await g.hold()
        }
      },
    })
    const written: number[] = []
    const finisher = new FinishBatcher(
      queue,
      workerId,
      app.log,
      app.metrics,
      (batch) => {
        for (const o of batch) written.push(o.job.id)
      },
      { urgent: (o) => o.job.type === 'serial' },
    )
    finisher.add({ job: plain!, success: true, result: null })
    await waitFor(() => ordinaryHeld, { what: 'the ordinary write to be in flight' })
    finisher.add({ job: serial.jobs[0]!, success: true, result: null })
    await waitFor(() => written.includes(serial.jobs[0]!.id), { what: "the limited job's outcome to be written", timeoutMs: 5_000 })
    const [row] = await sql`SELECT finished IS NOT NULL AS done FROM worker_jobs WHERE id = ${serial.jobs[0]!.id}`
    expect(row!.done).toBe(true)
    expect(finisher.size).toBe(1)
    g.open()
    await finisher.drained()
    expect(written.sort()).toEqual([plain!.id, serial.jobs[0]!.id].sort())
  } finally {
    await queue.close()
  }
})

test("a limited job claimed first in a round starts before the round's later claims return", async () => {
  await sql`DELETE FROM worker_jobs`
  // The limited job is the most urgent head, so its claim runs first; the ordinary claim comes after it.
  await sql`INSERT INTO worker_jobs (type, data, concurrency_key, priority) VALUES ('serial', '{"holdMs": 50}', '', -5)`
  await sql`INSERT INTO worker_jobs (type, data, priority) SELECT 'noop', '{}', 0 FROM generate_series(1, 3)`
  const w = loopOf(app, db.url, { concurrency: 4 })
  const g = gate()
  let ordinaryHeld = false
  interceptRun(w.queue, {
    // The common claim's reply (its jobs) is held until the test has seen the limited job start.
    after: async (r) => {
      if (Array.isArray(r) && r.some((j) => j?.type === 'noop')) {
        ordinaryHeld = true
        await g.hold()
      }
    },
  })
  await w.loop.start()
  try {
    await waitFor(() => ordinaryHeld && w.loop.runningJobs === 1, { what: 'the limited job to run while the ordinary claim is held', timeoutMs: 5_000 })
  } finally {
    g.open()
    await w.stop()
  }
  const runs = await sql`SELECT count(*)::int AS n FROM test_job_runs`
  expect(runs[0]!.n).toBe(1)
})

test('ordinary outcomes that cannot be written still show in /health while the express lane writes', async () => {
  await sql`DELETE FROM worker_jobs`
  await sql`INSERT INTO worker_jobs (type, data) VALUES ('noop', '{}')`
  await sql`INSERT INTO worker_jobs (type, data, concurrency_key) VALUES ('serial', '{}', '')`
  const queue = new QueueDb(db.url, { max: 3 }, 10_000)
  const workerId = 'handoff/health'
  try {
    const { plain, serial } = await claimOneOfEach(queue, workerId)
    // The first write (the ordinary outcome's) fails; the ones after it go through.
    interceptRun(queue, { before: failFirst })
    const written: number[] = []
    const finisher = new FinishBatcher(queue, workerId, app.log, app.metrics, (batch) => void written.push(...batch.map((o) => o.job.id)), {
      retryDelayMs: 300,
      urgent: (o) => o.job.type === 'serial',
    })
    finisher.add({ job: plain!, success: true, result: null })
    await waitFor(() => finisher.failingSince !== null, { what: 'the ordinary write to fail' })
    finisher.add({ job: serial.jobs[0]!, success: true, result: null })
    await waitFor(() => written.includes(serial.jobs[0]!.id), { what: "the limited job's outcome to be written" })
    // The express write succeeded; the ordinary outcome is still unwritten, and /health must say so.
    if (!written.includes(plain!.id)) expect(finisher.failingSince).not.toBeNull()
    await finisher.drained()
    expect(written).toContain(plain!.id)
    expect(finisher.failingSince).toBeNull()
  } finally {
    await queue.close()
  }
})

test('a freed slot whose announce fails is announced again, so other workers do not wait for their poll', async () => {
  const w = loopOf(app, db.url, { concurrency: 2 })
  const notified: string[] = []
  const listener = await sql.listen('worker_jobs', (payload) => notified.push(payload))
  let calls = 0
  interceptRun(w.queue, {
    before: (call) => {
      calls = call
      failFirst(call)
    },
  })
  try {
    // What the loop does when it cannot refill a slot it freed (workerLoop.ts, refillHere).
    await (w.loop as unknown as { announceFreed(): Promise<void> }).announceFreed()
    expect(notified).toEqual([])
    await waitFor(() => notified.length > 0, { what: 'the announce to be retried', timeoutMs: 5_000 })
    expect(calls).toBe(2)
  } finally {
    await listener.unlisten()
    await w.stop()
  }
})
