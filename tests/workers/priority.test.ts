import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'bun:test'
import type postgres from 'postgres'
import type { RunningServer } from '../../src/server/boot'
import type { ServerApp } from '../../src/server/serverApp'
import type { SQL } from 'drizzle-orm'
import { claimJobs, claimStatement, nextLook } from '../../src/server/workers/queue/claim'
import { seedCronJob } from '../../src/server/workers/queue/seed'
import { BUILT_IN_PRIORITY, JobInputError } from '../../src/server/workers/queue/submit'
import { successorOf } from '../../src/server/workers/queue/successor'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { sqlClient, startTestServer, testServerApp } from '../helpers/engine'
import { planOf, seqScansOfJobs } from '../helpers/plans'
import { waitFor } from '../helpers/wait'

/** Priorities: lower runs first, a backlog never delays a more urgent job beyond one claim, built-ins run first. */

let db: TestDatabase
let app: ServerApp
let sql: postgres.Sql

beforeAll(async () => {
  db = await createTestDatabase('priority')
  app = await testServerApp(db.url)
  sql = sqlClient(db.url)
})
afterAll(async () => {
  await app.dbHandle.close()
  await sql.end()
  await db.drop()
})
beforeEach(async () => {
  await sql`TRUNCATE worker_jobs`
})

const submitter = () => app.workerManager

describe('the claim', () => {
  test('takes lower priorities first, then the oldest due, then the lowest id', async () => {
    const past = (s: number) => new Date(Date.now() - s * 1000)
    const rows = await submitter().submitJobs([
      { type: 'noop', priority: 5, due: past(60) },
      { type: 'noop', priority: 0, due: past(1) },
      { type: 'noop', priority: -3, due: past(2) },
      { type: 'noop', priority: 0, due: past(30) },
      { type: 'noop', priority: -3, due: past(2) },
    ])
    const claimed = await claimJobs(app.db, { workerId: 'w', limit: 10, leaseMs: 5000, types: ['noop'] })
    expect(claimed.map((j) => j.id)).toEqual([rows[2]!.id, rows[4]!.id, rows[3]!.id, rows[1]!.id, rows[0]!.id])
    expect(claimed.map((j) => j.priority)).toEqual([-3, -3, 0, 0, 5])
  })

  test('a row inserted without a priority gets 0', async () => {
    const [row] = await sql`INSERT INTO worker_jobs (type) VALUES ('noop') RETURNING priority`
    expect(row!.priority).toBe(0)
  })

  test('the next due time is the earliest over every priority, not the first of the lowest', async () => {
    const soon = new Date(Date.now() + 10_000)
    await submitter().submitJobs([
      { type: 'noop', priority: -3, due: new Date(Date.now() + 60_000) },
      { type: 'noop', priority: 5, due: soon },
      { type: 'noop', priority: 0, due: new Date(Date.now() + 30_000) },
    ])
    const look = await nextLook(app.db, ['noop'])
    expect(look.lockedDue).toBe(false)
    expect(Math.abs(look.nextDue!.getTime() - soon.getTime())).toBeLessThan(2)
    // A due row at any priority counts as due (the claim could not take it only if it is locked).
    await submitter().submitJob({ type: 'noop', priority: 9 })
    expect((await nextLook(app.db, ['noop'])).lockedDue).toBe(true)
    // Other types' rows are not ours.
    expect(await nextLook(app.db, ['sleep'])).toEqual({ lockedDue: false, nextDue: null })
  })
})

/** Shared buffers the statement touched. */
async function buffersOf(statement: SQL): Promise<number> {
  const top = await planOf(app.db, statement, { analyze: true })
  return top['Shared Hit Blocks'] + top['Shared Read Blocks']
}

describe('the claim with a large due backlog', () => {
  // The UPDATE once joined the picked ids (FROM picked WHERE j.id = picked.id): on a table not analyzed
  // yet that was a nested loop over every pending row (1 s a claim at 20,000 rows), and once analyzed a
  // hash join over a sequential scan of them. Either way each claim cost grew with the backlog.
  const claim = () => claimStatement({ workerId: 'w', limit: 250, leaseMs: 5000, types: ['noop'] })

  test('finds its rows by primary key, not by scanning the backlog, before and after ANALYZE', async () => {
    await sql`INSERT INTO worker_jobs (type) SELECT 'noop' FROM generate_series(1, 20000)`
    const [stats] = await sql`SELECT reltuples FROM pg_class WHERE relname = 'worker_jobs'`
    expect(stats?.reltuples).toBe(-1) // never analyzed: the first burst after a deploy
    expect(seqScansOfJobs(await planOf(app.db, claim(), { analyze: true }))).toEqual([])
    await sql`ANALYZE worker_jobs`
    expect(seqScansOfJobs(await planOf(app.db, claim(), { analyze: true }))).toEqual([])
    const claimed = await claimJobs(app.db, { workerId: 'w', limit: 250, leaseMs: 5000, types: ['noop'] })
    expect(claimed.map((j) => j.id)).toEqual(claimed.map((j) => j.id).sort((a, b) => a - b))
    expect(claimed).toHaveLength(250)
  })
})

describe('the claim with many future-dated rows', () => {
  test('walks only the due rows: its cost does not grow with rows not yet due, at any priority', async () => {
    await sql`INSERT INTO worker_jobs (type, due, priority) SELECT 'noop', now() + interval '1 day', (g % 3) - 1 FROM generate_series(1, 200000) AS g`
    await sql`INSERT INTO worker_jobs (type, priority) SELECT 'noop', 1 FROM generate_series(1, 5)`
    await sql`VACUUM ANALYZE worker_jobs`
    // A claim that wants more rows than are due: the plain ORDER BY priority, due, id LIMIT n read every
    // future row's index entry (about 1,000 buffers here); the loose scan reads a few per priority.
    const buffers = await buffersOf(claimStatement({ workerId: 'w', limit: 250, leaseMs: 5000, types: ['noop'] }))
    expect(buffers).toBeLessThan(150)
    const claimed = await claimJobs(app.db, { workerId: 'w', limit: 250, leaseMs: 5000, types: ['noop'] })
    expect(claimed).toHaveLength(5)
  })
})

describe('submit', () => {
  test('a priority outside smallint or not an integer is refused, naming the field', async () => {
    for (const priority of [40_000, -40_000, 1.5, '1']) {
      const err = await submitter()
        .submitJob({ type: 'noop', priority } as never)
        .catch((e) => e)
      expect(err).toBeInstanceOf(JobInputError)
      expect(err.field).toBe('priority')
    }
    expect(await sql`SELECT 1 FROM worker_jobs`).toHaveLength(0)
  })

  test('retries and cron successors keep their priority', () => {
    const job = {
      id: 1,
      type: 'noop',
      userId: 0,
      data: {},
      priority: 4,
      concurrencyKey: null,
      cronSchedule: '*/5 * * * *',
      autoRescheduleOnFailure: true,
      autoRescheduleOnFailureDelay: 0,
      removeDelay: 60,
      persistent: false,
      tag: null,
      attempt: 1,
      maxAttempts: 3,
    }
    expect(successorOf(job, false, new Date())!.priority).toBe(4)
    expect(successorOf(job, true, new Date())!.priority).toBe(4)
  })

  test('built-in schedules are seeded at the built-in priority, ahead of the default', async () => {
    expect(BUILT_IN_PRIORITY).toBeLessThan(0)
    const seeded = await seedCronJob(app.db, { type: 'noop', cronSchedule: '*/5 * * * *' })
    const [row] = await sql`SELECT priority FROM worker_jobs WHERE id = ${seeded.id!}`
    expect(row!.priority).toBe(BUILT_IN_PRIORITY)
  })
})

describe('under a backlog (real server, real children)', () => {
  let server: RunningServer
  const CONCURRENCY = 4

  beforeAll(async () => {
    server = await startTestServer(db.url, { WORKER_COUNT: '1', WORKER_CONCURRENCY: String(CONCURRENCY), CRON_REMOVE_OLD_WORKER_JOBS: 'off' })
  })
  afterAll(async () => {
    await server?.stop()
  })

  test('a more urgent job waits for one claim at most, not for the backlog', async () => {
    const backlog = await submitter().submitJobs(Array.from({ length: 400 }, () => ({ type: 'sleep', data: { ms: 25 }, priority: 5 })))
    await waitFor(async () => (await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE finished IS NOT NULL`)[0]!.n >= 20, { what: 'the backlog running' })
    const urgent = await submitter().submitJob({ type: 'noop' })
    await waitFor(async () => (await sql`SELECT 1 FROM worker_jobs WHERE id = ${urgent.id} AND finished IS NOT NULL`).length > 0, { what: 'the urgent job' })
    const [{ started }] = (await sql`SELECT started FROM worker_jobs WHERE id = ${urgent.id}`) as unknown as [{ started: Date }]
    // Backlog jobs claimed after the urgent one was submitted and before it started: one claim's worth at most.
    const [{ n }] = (await sql`
      SELECT count(*)::int AS n FROM worker_jobs
      WHERE id = ANY(${backlog.map((j) => j.id)}) AND started > ${urgent.createdAt} AND started < ${started}`) as unknown as [{ n: number }]
    expect(n).toBeLessThanOrEqual(CONCURRENCY)
    const [{ left }] = (await sql`SELECT count(*)::int AS left FROM worker_jobs WHERE priority = 5 AND finished IS NULL`) as unknown as [{ left: number }]
    expect(left).toBeGreaterThan(100)
  })
})
