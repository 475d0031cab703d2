import { afterAll, beforeAll, beforeEach, expect, test } from 'bun:test'
import type postgres from 'postgres'
import type { ServerApp } from '../../src/server/serverApp'
import { submitJob } from '../../src/server/workers/queue/submit'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { CREATE_RUNS_TABLE, sqlClient } from '../helpers/engine'
import { appWith, limitedType, loopOf } from '../helpers/loops'
import { waitFor } from '../helpers/wait'

/**
 * Priorities hold between the common claim and the limited ones: an urgent job of a limited type is not
 * delayed beyond one claim by a backlog of less urgent jobs, whichever claim those belong to. The loop
 * used to claim common types first and give limited types only the slots left, so a steady backlog of
 * ordinary jobs kept every slot busy and the limited job never started.
 */
let db: TestDatabase
let sql: postgres.Sql
let app: ServerApp
const SLOTS = 2

beforeAll(async () => {
  db = await createTestDatabase('limited_priority')
  sql = sqlClient(db.url)
  await sql.unsafe(CREATE_RUNS_TABLE)
  app = await appWith(db.url, [
    limitedType('bulk', { concurrency: 100 }),
    limitedType('capped', { concurrency: 5 }),
    // One at a time per key, no cap on the type: its claim can fill every slot.
    limitedType('keyed', { concurrencyKey: (d: { key: string }) => d.key }),
  ])
})
afterAll(async () => {
  await app.dbHandle.close()
  await sql.end()
  await db.drop()
})
beforeEach(async () => {
  await sql`TRUNCATE worker_jobs`
})

const startedOf = async (id: number): Promise<Date | null> => (await sql`SELECT started FROM worker_jobs WHERE id = ${id}`)[0]!.started

/** Runs a loop over a backlog that outlasts the test; `then` submits the urgent job and waits for it. */
async function withBacklog<T>(backlog: { type: string; data: unknown; priority: number }[], then: () => Promise<T>): Promise<T> {
  await app.workerManager.submitJobs(backlog)
  const w = loopOf(app, db.url, { concurrency: SLOTS })
  await w.loop.start()
  try {
    await waitFor(async () => (await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE finished IS NOT NULL`)[0]!.n >= 10, { what: 'the backlog to run' })
    return await then()
  } finally {
    // The rest of the backlog is not run: the loop drains only what it holds.
    await sql`UPDATE worker_jobs SET finished = now(), success = false WHERE started IS NULL AND finished IS NULL`
    await w.stop()
  }
}

/** How many backlog jobs started after `after` and before `before` (both from the database's clock). */
const startedBetween = async (type: string, after: Date, before: Date) =>
  (await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE type = ${type} AND started > ${after} AND started < ${before}`)[0]!.n as number

/**
 * Submits the urgent job; returns it with the database's clock read once its submit has committed (the
 * loop may see it from then on: the claims started before can take a slot each, and no more).
 */
async function submitUrgent(type: string, data: unknown) {
  const job = await submitJob(app.db, app.registry, { type, data, priority: -10 })
  const [{ now }] = (await sql`SELECT clock_timestamp() AS now`) as unknown as [{ now: Date }]
  return { job, visibleAt: now }
}

/** Each case: a backlog of one kind (priority 5) and an urgent job (-10) of another. */
const URGENT_BEHIND_BACKLOG = [
  { name: 'an urgent job of a limited type, behind a backlog of ordinary jobs', backlog: { type: 'sleep', data: { ms: 10 } }, urgent: { type: 'capped', data: {} } },
  { name: 'an urgent job of one limited type, behind the backlog of another', backlog: { type: 'bulk', data: { holdMs: 10 } }, urgent: { type: 'capped', data: {} } },
  { name: 'an ordinary urgent job, behind the backlog of a limited type', backlog: { type: 'bulk', data: { holdMs: 10 } }, urgent: { type: 'sleep', data: { ms: 0 } } },
]

for (const c of URGENT_BEHIND_BACKLOG) {
  test(`${c.name}, starts within one claim`, async () => {
    const backlog = Array.from({ length: 3000 }, () => ({ ...c.backlog, priority: 5 }))
    await withBacklog(backlog, async () => {
      const urgent = await submitUrgent(c.urgent.type, c.urgent.data)
      const started = await waitFor(() => startedOf(urgent.job.id), { timeoutMs: 10_000, what: `the urgent ${c.urgent.type} job to start` })
      // One claim's worth at most: the slots that were being claimed when it became visible.
      expect(await startedBetween(c.backlog.type, urgent.visibleAt, started)).toBeLessThanOrEqual(SLOTS)
    })
  }, 60_000)
}

test("a source's own backlog does not jump ahead of another source's more urgent head", async () => {
  // Ordinary jobs at 0 and 5, limited ones at 1: in priority order the limited ones come between.
  const w = loopOf(app, db.url, { concurrency: SLOTS })
  await app.workerManager.submitJobs([
    ...Array.from({ length: 20 }, () => ({ type: 'sleep', data: { ms: 5 }, priority: 0 })),
    ...Array.from({ length: 20 }, () => ({ type: 'sleep', data: { ms: 5 }, priority: 5 })),
    ...Array.from({ length: 20 }, () => ({ type: 'bulk', data: { holdMs: 5 }, priority: 1 })),
  ])
  await w.loop.start()
  try {
    await waitFor(async () => (await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE finished IS NULL`)[0]!.n === 0, {
      timeoutMs: 30_000,
      what: 'every job to finish',
    })
    const [order] = await sql`
      SELECT max(started) FILTER (WHERE priority = 0) AS last0, min(started) FILTER (WHERE priority = 1) AS first1,
             max(started) FILTER (WHERE priority = 1) AS last1, min(started) FILTER (WHERE priority = 5) AS first5
      FROM worker_jobs`
    expect(order!.last0 <= order!.first1).toBe(true)
    expect(order!.last1 <= order!.first5).toBe(true)
  } finally {
    await w.stop()
  }
}, 60_000)

test("a limited claim takes no rows past the next claim's head either", async () => {
  // Keyed jobs at 0 and 10 (distinct keys: its limits let every one start), ordinary jobs at 5. Unbounded,
  // the keyed claim took its job at 0 and then a job at 10 into the second slot, ahead of the jobs at 5.
  await app.workerManager.submitJobs([
    { type: 'keyed', data: { key: 'k0', holdMs: 20 }, priority: 0 },
    ...Array.from({ length: 4 }, (_, i) => ({ type: 'keyed', data: { key: `k${i + 1}`, holdMs: 20 }, priority: 10 })),
    ...Array.from({ length: 4 }, () => ({ type: 'sleep', data: { ms: 20 }, priority: 5 })),
  ])
  const w = loopOf(app, db.url, { concurrency: SLOTS })
  await w.loop.start()
  try {
    await waitFor(async () => (await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE finished IS NULL`)[0]!.n === 0, {
      timeoutMs: 30_000,
      what: 'every job to finish',
    })
    const [order] = await sql`
      SELECT max(started) FILTER (WHERE priority = 5) AS last5, min(started) FILTER (WHERE priority = 10) AS first10 FROM worker_jobs`
    expect(order!.last5 <= order!.first10).toBe(true)
  } finally {
    await w.stop()
  }
}, 60_000)
