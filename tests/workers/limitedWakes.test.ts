import { afterAll, beforeAll, beforeEach, expect, test } from 'bun:test'
import type postgres from 'postgres'
import type { ServerApp } from '../../src/server/serverApp'
import { reconcileLimitKeys } from '../../src/server/workers/queue/limitKeys'
import { limitedTypes, UNKEYED } from '../../src/server/workers/queue/limits'
import { announceServer } from '../../src/server/workers/queue/servers'
import { submitJob } from '../../src/server/workers/queue/submit'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { CREATE_RUNS_TABLE, sqlClient } from '../helpers/engine'
import { appWith, limitedType, loopOf } from '../helpers/loops'
import { waitFor } from '../helpers/wait'

/**
 * A due job of a limited type with a free slot never waits for the poll (a minute here): the loop may skip
 * the limited claims only while none of them can have work (limitedIdle), and every way work appears wakes
 * it. Each case failed on the first version of claimRound or of the key repair (found in review).
 */
let db: TestDatabase
let sql: postgres.Sql
let app: ServerApp
const POLL_MS = 60_000
/** Far below the poll and the 8 s hold of the jobs that keep a slot busy: only a wake starts it this soon. */
const PROMPT_MS = 5_000

beforeAll(async () => {
  db = await createTestDatabase('limited_wakes')
  sql = sqlClient(db.url)
  await sql.unsafe(CREATE_RUNS_TABLE)
  app = await appWith(db.url, [
    limitedType('capped', { concurrency: 100 }),
    limitedType('other', { concurrency: 100 }),
    limitedType('single', { concurrency: 1 }),
    limitedType('paced', { concurrency: 1, rateLimit: { max: 1, perMs: 60_000 } }),
  ])
})
afterAll(async () => {
  await app.dbHandle.close()
  await sql.end()
  await db.drop()
})
beforeEach(async () => {
  await sql`TRUNCATE worker_jobs, worker_servers, test_job_runs`
})

const startedOf = async (id: number) => (await sql`SELECT started FROM worker_jobs WHERE id = ${id}`)[0]!.started as Date | null

test("a limited type's rows past a bound are asked for again when its bounded claim was cut short", async () => {
  // Two slots: the capped job at 0 holds one for 8 s; the ordinary job at 5 bounds capped's first claim to
  // priority 5 and takes the other slot; capped's job at 10 must start as soon as that slot frees.
  const [, ordinary, late] = await app.workerManager.submitJobs([
    { type: 'capped', data: { holdMs: 8000 }, priority: 0 },
    { type: 'sleep', data: { ms: 0 }, priority: 5 },
    { type: 'capped', data: { holdMs: 0 }, priority: 10 },
  ])
  const w = loopOf(app, db.url, { concurrency: 2, pollIntervalMs: POLL_MS })
  await w.loop.start()
  try {
    await waitFor(async () => (await sql`SELECT 1 FROM worker_jobs WHERE id = ${ordinary!.id} AND finished IS NOT NULL`).length > 0, {
      what: 'the ordinary job to finish',
    })
    await waitFor(() => startedOf(late!.id), { timeoutMs: PROMPT_MS, what: 'the priority-10 capped job to start once a slot freed' })
  } finally {
    await w.stop()
  }
}, 30_000)

test('a NOTIFY that arrives while a claim round runs is not lost when the round ends', async () => {
  const w = loopOf(app, db.url, { concurrency: 2, pollIntervalMs: POLL_MS })
  await w.loop.start()
  const lock = await sql.reserve()
  try {
    await waitFor(() => w.loop.parked, { what: 'the loop to park' })
    // Hold capped's claim lock, so the round its job starts stays in flight.
    await lock`SELECT pg_advisory_lock(hashtextextended('worker_jobs.limit:capped', 0))`
    await submitJob(app.db, app.registry, { type: 'capped', data: { holdMs: 8000 } })
    await waitFor(async () => (await sql`SELECT 1 FROM pg_stat_activity WHERE wait_event = 'advisory' AND datname = current_database()`).length > 0, {
      what: "the loop's round to wait on capped's lock",
    })
    const seen = w.loop.notifyCount
    const other = await submitJob(app.db, app.registry, { type: 'other', data: { holdMs: 0 } })
    await waitFor(() => w.loop.notifyCount > seen, { what: "the other job's NOTIFY to reach the loop during the round" })
    await lock`SELECT pg_advisory_unlock(hashtextextended('worker_jobs.limit:capped', 0))`
    await waitFor(() => startedOf(other.id), { timeoutMs: PROMPT_MS, what: 'the other limited job to start after the round' })
  } finally {
    lock.release()
    await w.stop()
  }
}, 30_000)

test('a row the key repair keys is announced: it starts at once, not at the poll', async () => {
  await announceServer(app.db, { id: 'srv-a', hostname: 'h', pid: 1, jobTypes: Object.keys(app.registry), limitedTypes: limitedTypes(app.registry) })
  const w = loopOf(app, db.url, { concurrency: 4, pollIntervalMs: POLL_MS })
  await w.loop.start()
  try {
    const rounds = w.loop.claimRounds
    const [hand] = await sql`INSERT INTO worker_jobs (type, data) VALUES ('perKey', '{"key": "alice"}') RETURNING id`
    expect((await sql`SELECT concurrency_key FROM worker_jobs WHERE id = ${hand!.id}`)[0]!.concurrency_key).toBe(UNKEYED)
    // The loop has looked since the insert (its NOTIFY), skipped the row and parked.
    await waitFor(() => w.loop.claimRounds > rounds && w.loop.parked, { what: 'the loop to look and park' })
    expect(await startedOf(Number(hand!.id))).toBeNull()
    const repaired = await app.db.transaction((tx) => reconcileLimitKeys(tx, app.registry, { boot: false }))
    expect(repaired.moved).toBe(1)
    await waitFor(() => startedOf(Number(hand!.id)), { timeoutMs: PROMPT_MS, what: 'the keyed row to start' })
  } finally {
    await w.stop()
  }
}, 30_000)

test('a freed slot the freeing worker gives to more urgent work is announced to the other workers', async () => {
  // A (one slot) runs single's first job; B claims only `single`. When the job ends, A refills its slot
  // itself, with the more urgent ordinary job (3 s): single's next job can then only start on B, and B
  // hears of the free slot only if A announces it.
  const onlySingle = await appWith(db.url, [limitedType('single', { concurrency: 1 })], { withTestJobs: false })
  const a = loopOf(app, db.url, { concurrency: 1, pollIntervalMs: POLL_MS })
  const b = loopOf(onlySingle, db.url, { concurrency: 2, pollIntervalMs: POLL_MS })
  await a.loop.start()
  try {
    const first = await submitJob(app.db, app.registry, { type: 'single', data: { holdMs: 500 } })
    await waitFor(() => startedOf(first.id), { what: "single's first job to start on A" })
    await b.loop.start()
    const rounds = b.loop.claimRounds
    const second = await submitJob(app.db, app.registry, { type: 'single', data: { holdMs: 0 } })
    const urgent = await submitJob(app.db, app.registry, { type: 'sleep', data: { ms: 3000 }, priority: -5 })
    await waitFor(() => b.loop.claimRounds > rounds && b.loop.parked, { what: 'B to look and park (single is at its limit)' })
    expect(await startedOf(second.id)).toBeNull()
    const urgentStarted = await waitFor(() => startedOf(urgent.id), { timeoutMs: PROMPT_MS, what: 'the urgent job to take A\'s freed slot' })
    const secondStarted = await waitFor(() => startedOf(second.id), { timeoutMs: PROMPT_MS, what: "single's second job to start on B" })
    expect(secondStarted.getTime() - urgentStarted.getTime()).toBeLessThan(PROMPT_MS)
    expect((await sql`SELECT locked_by FROM worker_jobs WHERE id = ${second.id}`)[0]!.locked_by).toBe(b.workerId)
  } finally {
    await b.stop()
    await a.stop()
    await onlySingle.dbHandle.close()
  }
}, 30_000)

test('a freed slot the freeing worker cannot refill because of a rate is still announced', async () => {
  // Only the refilling worker learns when the rate's window reopens (its own timer): the others, which may
  // have quieted the type earlier with no timer, must be told, as for any slot it could not refill.
  const notified: string[] = []
  const listener = await sql.listen('worker_jobs', (payload) => notified.push(payload))
  const w = loopOf(app, db.url, { concurrency: 2, pollIntervalMs: POLL_MS })
  await w.loop.start()
  try {
    const first = await submitJob(app.db, app.registry, { type: 'paced', data: { holdMs: 100 } })
    await waitFor(() => startedOf(first.id), { what: "paced's first job to start" })
    const second = await submitJob(app.db, app.registry, { type: 'paced', data: {} })
    await waitFor(() => notified.length >= 2, { what: 'the two submits to be announced' })
    await waitFor(async () => (await sql`SELECT 1 FROM worker_jobs WHERE id = ${first.id} AND finished IS NOT NULL`).length > 0, {
      what: "paced's first job to finish",
    })
    // The refill found the second job held by the rate (one start per minute): it is announced all the same.
    await waitFor(() => notified.length >= 3, { timeoutMs: PROMPT_MS, what: 'the rate-held freed slot to be announced' })
    expect(await startedOf(second.id)).toBeNull()
  } finally {
    await listener.unlisten()
    await w.stop()
  }
}, 30_000)
