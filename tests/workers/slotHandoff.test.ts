import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type postgres from 'postgres'
import type { WorkerJob } from '../../src/server/db/schema'
import type { ServerApp } from '../../src/server/serverApp'
import { finishAndClaimNext } from '../../src/server/workers/queue/handoff'
import { claimLimited, type TypeLimit } from '../../src/server/workers/queue/limits'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { CREATE_RUNS_TABLE, sqlClient } from '../helpers/engine'
import { holdFirstReply, interceptRun } from '../helpers/intercept'
import { appWith, limitedType, loopOf, runsOf } from '../helpers/loops'
import { waitFor } from '../helpers/wait'

/**
 * The hand-off of a limit-1 type's slot (queue/handoff.ts, workerLoop.ts handOff): the outcome of the job
 * that ended and the claim of the type's next job are one transaction, on the worker that ran it. And the
 * ways it could go wrong: a lost reply (the claim committed, the worker never saw it), and a drain that
 * begins while a hand-off is in flight.
 */
let db: TestDatabase
let sql: postgres.Sql
let app: ServerApp

beforeAll(async () => {
  db = await createTestDatabase('slot_handoff')
  sql = sqlClient(db.url)
  await sql.unsafe(CREATE_RUNS_TABLE)
  app = await appWith(db.url)
})
afterAll(async () => {
  await app.dbHandle.close()
  await sql.end()
  await db.drop()
})

async function insertSerial(holds: number[]): Promise<number[]> {
  await sql`DELETE FROM worker_jobs`
  await sql`DELETE FROM test_job_runs`
  const ids: number[] = []
  // One at a time, so their ids (and due times) give the order they run in.
  for (const holdMs of holds) {
    const [r] = await sql`INSERT INTO worker_jobs (type, data, concurrency_key) VALUES ('serial', ${sql.json({ holdMs })}, '') RETURNING id`
    ids.push(Number(r!.id))
  }
  return ids
}

const isHandoff = (r: unknown) => typeof r === 'object' && r !== null && 'settled' in r

test("the outcome of a limit-1 job and the claim of the type's next job commit together, on the worker that ran it", async () => {
  const [first, second] = await insertSerial([30, 1_500])
  // Two workers: the slot could go to either, and it goes to neither of them through a NOTIFY race.
  // Long leases: no renewal rewrites the second row (and its xmin) while the test reads it.
  const w1 = loopOf(app, db.url, { leaseMs: 120_000 })
  const w2 = loopOf(app, db.url, { leaseMs: 120_000 })
  await Promise.all([w1.loop.start(), w2.loop.start()])
  try {
    await waitFor(async () => (await sql`SELECT 1 FROM worker_jobs WHERE id = ${second!} AND started IS NOT NULL`).length > 0, {
      what: 'the second job to start',
    })
    const rows = await sql`SELECT id, xmin::text AS xid, locked_by, finished IS NOT NULL AS done FROM worker_jobs WHERE id IN (${first!}, ${second!}) ORDER BY id`
    expect(rows.map((r) => r.done)).toEqual([true, false])
    // One transaction wrote both rows: the first's finish and the second's claim.
    expect(rows[0]!.xid).toBe(rows[1]!.xid)
    expect(rows[0]!.locked_by).toBe(rows[1]!.locked_by)
  } finally {
    await Promise.all([w1.stop(), w2.stop()])
  }
  const runs = await runsOf(sql, [first!, second!])
  expect(runs).toHaveLength(2)
  expect(runs[1]!.started_at >= runs[0]!.ended_at).toBe(true)
})

test('a hand-off whose reply is lost: the job it claimed goes back to pending, then runs once', async () => {
  const [first, second] = await insertSerial([20, 20])
  const w = loopOf(app, db.url, { concurrency: 2 })
  let lost = 0
  interceptRun(w.queue, {
    // The transaction committed (the first job finished, the second claimed), and the reply never came.
    after: (r) => {
      if (isHandoff(r) && lost++ === 0) throw Object.assign(new Error('connection reset'), { code: 'ECONNRESET' })
    },
  })
  await w.loop.start()
  try {
    await waitFor(async () => (await sql`SELECT 1 FROM worker_jobs WHERE id = ${second!} AND finished IS NOT NULL`).length > 0, {
      what: 'the second job to finish',
      timeoutMs: 10_000,
    })
  } finally {
    await w.stop()
  }
  expect(lost).toBeGreaterThan(0)
  // Released unrun (attempt unchanged), claimed again, run once: never run while its claim was unknown.
  const [row] = await sql`SELECT attempt, success, last_error FROM worker_jobs WHERE id = ${second!}`
  expect(row).toEqual({ attempt: 1, success: true, last_error: null })
  const runs = await runsOf(sql, [first!, second!])
  expect(runs.map((r) => Number(r.job_id))).toEqual([first!, second!])
})

test('a drain that begins while a hand-off is in flight waits for the job it claimed, and writes its outcome', async () => {
  const [first, second] = await insertSerial([20, 50])
  const w = loopOf(app, db.url, { concurrency: 2 })
  const reply = holdFirstReply(w.queue, isHandoff)
  await w.loop.start()
  const drained = await (async () => {
    await waitFor(reply.held, { what: 'the hand-off to be in flight' })
    const stopping = w.stop().then(() => true)
    // The hand-off's reply comes only once the drain has begun.
    reply.open()
    return stopping
  })()
  expect(drained).toBe(true)
  const rows = await sql`SELECT id, finished IS NOT NULL AS done, success, locked_by FROM worker_jobs WHERE id IN (${first!}, ${second!}) ORDER BY id`
  expect(rows.map((r) => [r.done, r.success])).toEqual([
    [true, true],
    [true, true],
  ])
  expect((await runsOf(sql, [second!])).length).toBe(1)
})

test('a drain, then an abort, while a hand-off is in flight: the job it claimed goes back to pending unrun', async () => {
  const [, second] = await insertSerial([20, 50])
  const w = loopOf(app, db.url, { concurrency: 2 })
  const reply = holdFirstReply(w.queue, isHandoff)
  await w.loop.start()
  await waitFor(reply.held, { what: 'the hand-off to be in flight' })
  // As the manager does when a drain takes too long: drain, then abort, once the claim loop has ended
  // (which, had the abort come first, would have returned what was claimed after it).
  const stopping = w.stop()
  await (w.loop as unknown as { done: Promise<void> }).done
  w.loop.abortAll('forced shutdown')
  reply.open()
  await stopping
  const [row] = await sql`SELECT started, locked_by, finished, attempt FROM worker_jobs WHERE id = ${second!}`
  expect(row).toEqual({ started: null, locked_by: null, finished: null, attempt: 1 })
  expect(await runsOf(sql, [second!])).toHaveLength(0)
})

test('at one priority, the hand-off leaves the slot to older ordinary work: a limit-1 backlog does not starve it', async () => {
  await sql`DELETE FROM worker_jobs`
  await sql`DELETE FROM test_job_runs`
  // In (priority, due, id) order: s1, then the ordinary job, then the rest of the serial backlog.
  const [s1] = await sql`INSERT INTO worker_jobs (type, data, concurrency_key, due) VALUES ('serial', '{"holdMs": 20}', '', now() - interval '10 seconds') RETURNING id`
  const [plain] = await sql`INSERT INTO worker_jobs (type, data, due) VALUES ('noop', '{}', now() - interval '5 seconds') RETURNING id`
  const rest = await sql`INSERT INTO worker_jobs (type, data, concurrency_key, due) SELECT 'serial', '{"holdMs": 20}', '', now() - interval '1 second' FROM generate_series(1, 4) RETURNING id`
  // One slot: whatever takes it when s1 ends decides who waits.
  const w = loopOf(app, db.url, { concurrency: 1 })
  await w.loop.start()
  try {
    const ids = [Number(s1!.id), Number(plain!.id), ...rest.map((r) => Number(r.id))]
    await waitFor(async () => (await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE id = ANY(${ids}) AND finished IS NOT NULL`)[0]!.n === ids.length, {
      what: 'every job to finish',
    })
  } finally {
    await w.stop()
  }
  const order = await sql`SELECT id FROM worker_jobs ORDER BY started, id`
  expect(order.map((r) => Number(r.id)).slice(0, 3)).toEqual([Number(s1!.id), Number(plain!.id), Number(rest[0]!.id)])
})

describe('the one-statement hand-off of a type with only a type-wide cap (no advisory lock)', () => {
  const capped = (concurrency: number): TypeLimit => ({ concurrency, perKey: null, rate: null, keyRate: null })

  /** Claims one pending serial row for `workerId`, as if under a cap of 10 (the old deploy's). */
  async function claimAs(workerId: string) {
    const got = await claimLimited(app.dbHandle.db, { workerId, limit: 1, leaseMs: 60_000, types: ['serial'], type: 'serial', limits: capped(10) })
    expect(got.jobs).toHaveLength(1)
    return got.jobs[0]!
  }

  const handOff = (workerId: string, job: WorkerJob, concurrency: number) =>
    finishAndClaimNext(app.dbHandle.db, {
      workerId,
      leaseMs: 60_000,
      limit: 1,
      types: ['serial'],
      type: 'serial',
      limits: capped(concurrency),
      outcomes: [{ job, success: true, result: null }],
    })

  test('at the cap, it replaces the job it finished with the next one', async () => {
    const [, next] = await insertSerial([0, 0])
    const mine = await claimAs('replace/at-cap')
    const h = await handOff('replace/at-cap', mine, 1)
    expect(h!.jobs.map((j) => j.id)).toEqual([next!])
    expect(h!.settled).toBe(true)
    expect([...h!.written]).toEqual([[mine.id, 'succeeded']])
  })

  test('over the cap (it was lowered while jobs ran), it replaces none: the count comes down as jobs end', async () => {
    await insertSerial([0, 0, 0, 0])
    const others = [await claimAs('replace/other'), await claimAs('replace/other')]
    const mine = await claimAs('replace/over-cap')
    // Three running; the cap is now 1.
    const h = await handOff('replace/over-cap', mine, 1)
    expect(h!.jobs).toEqual([])
    expect(h!.settled).toBe(false)
    const [r] = await sql`SELECT count(*)::int AS running FROM worker_jobs WHERE type = 'serial' AND started IS NOT NULL AND finished IS NULL`
    expect(r!.running).toBe(others.length)
  })

  test('a row requeued by hand that kept its locked_by is finished, but frees no slot to replace', async () => {
    const [a, b] = await insertSerial([0, 0, 0])
    const mine = await claimAs('replace/requeued')
    expect(mine.id).toBe(a!)
    // Someone puts it back to pending with psql (for later), leaving locked_by; another worker then takes
    // the type's one slot.
    await sql`UPDATE worker_jobs SET started = NULL, lease_expires_at = NULL, due = now() + interval '1 hour' WHERE id = ${a!}`
    const other = await claimLimited(app.dbHandle.db, { workerId: 'replace/other', limit: 1, leaseMs: 60_000, types: ['serial'], type: 'serial', limits: capped(1) })
    expect(other.jobs.map((j) => j.id)).toEqual([b!])
    const h = await handOff('replace/requeued', mine, 1)
    expect(h!.jobs).toEqual([])
    const [r] = await sql`SELECT count(*)::int AS running FROM worker_jobs WHERE type = 'serial' AND started IS NOT NULL AND finished IS NULL`
    expect(r!.running).toBe(1)
  })

  test('a row the finish did not write (rescued meanwhile) frees no slot to replace', async () => {
    await insertSerial([0, 0])
    const mine = await claimAs('replace/rescued')
    // The rescuer put it back to pending: it is no longer ours, and its slot was the rescuer's to announce.
    await sql`UPDATE worker_jobs SET started = NULL, locked_by = NULL, lease_expires_at = NULL WHERE id = ${mine.id}`
    const h = await handOff('replace/rescued', mine, 1)
    expect(h!.jobs).toEqual([])
    expect(h!.written.size).toBe(0)
  })
})

test('a cap of 2 holds across three workers handing off and claiming at once, and two do run together', async () => {
  const pairApp = await appWith(db.url, [limitedType('pair', { concurrency: 2 })], { withTestJobs: true })
  await sql`DELETE FROM worker_jobs`
  await sql`DELETE FROM test_job_runs`
  const rows = await sql`INSERT INTO worker_jobs (type, data, concurrency_key) SELECT 'pair', '{"holdMs": 10}', '' FROM generate_series(1, 60) RETURNING id`
  const ids = rows.map((r) => Number(r.id))
  const loops = [0, 1, 2].map(() => loopOf(pairApp, db.url, { concurrency: 3 }))
  await Promise.all(loops.map((l) => l.loop.start()))
  try {
    await waitFor(async () => (await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE id = ANY(${ids}) AND finished IS NOT NULL`)[0]!.n === ids.length, {
      what: 'every pair job to finish',
      timeoutMs: 30_000,
    })
  } finally {
    await Promise.all(loops.map((l) => l.stop()))
    await pairApp.dbHandle.close()
  }
  const runs = await runsOf(sql, ids)
  expect(runs).toHaveLength(ids.length)
  // The most runs ever in progress at one instant, from the side table's start and end times.
  const edges = runs.flatMap((r) => [
    { t: r.started_at.getTime(), d: 1 },
    { t: r.ended_at.getTime(), d: -1 },
  ])
  edges.sort((a, b) => a.t - b.t || a.d - b.d)
  let now = 0
  let most = 0
  for (const e of edges) {
    now += e.d
    most = Math.max(most, now)
  }
  expect(most).toBe(2)
})

test("no hand-off while a claim's fate is unknown: the loop gets a slot back and releases the lost claim's row", async () => {
  // A limit-1 chain holds the worker's one ordinary slot from job to job through hand-offs.
  const chain = await insertSerial(Array.from({ length: 20 }, () => 50))
  const w = loopOf(app, db.url, { concurrency: 1, urgentSlots: 1, pollIntervalMs: 100 })
  // The urgent slot's claim of an urgent job commits, and its reply is lost.
  let lost = false
  interceptRun(w.queue, {
    after: (r) => {
      if (lost || !Array.isArray(r) || !r.some((j) => j?.type === 'noop')) return
      lost = true
      throw Object.assign(new Error('connection reset'), { code: 'ECONNRESET' })
    },
  })
  await w.loop.start()
  try {
    await waitFor(async () => (await sql`SELECT 1 FROM worker_jobs WHERE id = ${chain[0]!} AND started IS NOT NULL`).length > 0, { what: 'the chain to start' })
    const [urgent] = await sql`INSERT INTO worker_jobs (type, data, priority) VALUES ('noop', '{}', -5) RETURNING id`
    await waitFor(async () => (await sql`SELECT 1 FROM worker_jobs WHERE id = ${urgent!.id} AND finished IS NOT NULL`).length > 0, {
      what: 'the urgent job to finish',
      timeoutMs: 10_000,
    })
    expect(lost).toBe(true)
    // Its row went back to pending unrun and was taken again while the chain still ran: with hand-offs
    // going on, the slot stayed full and the row stayed claimed, unrun, until the chain ended.
    const [row] = await sql`SELECT attempt, success, finished FROM worker_jobs WHERE id = ${urgent!.id}`
    expect(row!.attempt).toBe(1)
    expect(row!.success).toBe(true)
    const [last] = await sql`SELECT started FROM worker_jobs WHERE id = ${chain.at(-1)!}`
    expect(last!.started === null || row!.finished < last!.started).toBe(true)
  } finally {
    await w.stop()
  }
})
