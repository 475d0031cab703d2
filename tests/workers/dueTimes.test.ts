import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type postgres from 'postgres'
import type { RunningServer } from '../../src/server/boot'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { sqlClient, startTestServer } from '../helpers/engine'
import { waitFor } from '../helpers/wait'

/**
 * Future-dated jobs start on time on an idle server. The poll is set to a minute, so only the due timers
 * can wake a worker: a job that waits for the poll shows up as a minute late.
 *
 * Regression: when the due timer fired, the loop claimed what was due but did not read the next due time
 * again (only the poll did), so every job after the first of a burst waited for the next poll: with the
 * default 5 s poll the lateness was p50 1.5 s.
 */
let db: TestDatabase
let server: RunningServer
let sql: postgres.Sql

const JOBS = 30
const SPACING_MS = 100

beforeAll(async () => {
  db = await createTestDatabase('duetimes')
  sql = sqlClient(db.url)
  server = await startTestServer(db.url, { WORKER_COUNT: '2', WORKER_POLL_INTERVAL_MS: '60000', CRON_REMOVE_OLD_WORKER_JOBS: 'off' })
})
afterAll(async () => {
  await server?.stop()
  await sql.end()
  await db.drop()
})

/** Waits for the jobs to finish and returns started − due of each, in ms, from the table's own columns. */
async function lateness(ids: number[]): Promise<number[]> {
  let finished = 0
  const rows = await waitFor(
    async () => {
      const r = await sql`SELECT id, success, extract(epoch FROM started - due) * 1000 AS late_ms FROM worker_jobs
        WHERE id IN ${sql(ids)} AND finished IS NOT NULL`
      finished = r.length
      return r.length === ids.length ? r : null
    },
    // The last one is due 3 s from now; a job left to the poll would need a minute.
    { timeoutMs: JOBS * SPACING_MS + 5000, intervalMs: 50, what: 'every future-dated job to run' },
  ).catch(async (err) => {
    const [late] = await sql`SELECT count(*)::int AS n, min(due) AS first_due FROM worker_jobs WHERE id IN ${sql(ids)} AND started IS NULL`
    throw new Error(`${err.message}: ${finished} of ${ids.length} ran; ${late!.n} still pending, the first due at ${late!.first_due?.toISOString()} (now ${new Date().toISOString()})`)
  })
  expect(rows.every((r) => r.success === true)).toBe(true)
  return rows.map((r) => Number(r.late_ms)).sort((a, b) => a - b)
}

function check(label: string, late: number[]): void {
  const p50 = late[Math.floor(late.length / 2)]!
  const max = late[late.length - 1]!
  console.log(`[dueTimes] ${label}: lateness p50 ${p50.toFixed(1)} ms, max ${max.toFixed(1)} ms (min ${late[0]!.toFixed(1)} ms)`)
  expect(late).toHaveLength(JOBS)
  // Never early: the claim only takes rows whose due time has passed.
  expect(late[0]!).toBeGreaterThanOrEqual(0)
  expect(p50).toBeLessThan(25)
  expect(max).toBeLessThan(250)
}

describe('an idle server runs future-dated jobs on time', () => {
  test('30 jobs due over the next 3 s, inserted in one statement', async () => {
    const rows = await sql`INSERT INTO worker_jobs (type, user_id, due)
      SELECT 'noop', 0, now() + k * ${SPACING_MS} * interval '1 millisecond' FROM generate_series(1, ${JOBS}) AS k RETURNING id`
    check('one statement', await lateness(rows.map((r) => Number(r.id))))
  }, 20_000)

  test('30 jobs due over the next 3 s, inserted by 30 separate statements', async () => {
    // One base time for all, so the due times are exactly 100 ms apart however long the inserts take.
    const [{ base }] = (await sql`SELECT now() AS base`) as unknown as [{ base: Date }]
    const ids: number[] = []
    for (let k = 1; k <= JOBS; k++) {
      const due = new Date(base.getTime() + 200 + k * SPACING_MS)
      const [row] = await sql`INSERT INTO worker_jobs (type, user_id, due) VALUES ('noop', 0, ${due}) RETURNING id`
      ids.push(Number(row!.id))
    }
    check('separate statements', await lateness(ids))
  }, 20_000)

  // Regression, the same defect's remaining case (it made the two tests above fail now and then): when
  // the re-read said the earliest pending job was already due, but the claim could not take it
  // (another child's claim has it locked and not committed yet, or its due time is a fraction of a
  // millisecond ahead of the database's clock), the loop claimed again without re-reading the due time
  // afterwards, and slept with no timer armed: every later job waited for the poll. A row that another
  // transaction keeps locked across its due time makes that case deterministic.
  test('a due row held locked by another transaction does not stop the timers of the jobs after it', async () => {
    const [first, second] = await sql`INSERT INTO worker_jobs (type, user_id, due)
      VALUES ('noop', 0, now() + interval '700 milliseconds'), ('noop', 0, now() + interval '1200 milliseconds') RETURNING id`
    const [firstId, secondId] = [Number(first!.id), Number(second!.id)]
    // Lock the first row (as an in-flight claim of another worker does) until the second has had its chance.
    await sql.begin(async (tx) => {
      await tx`SELECT id FROM worker_jobs WHERE id = ${firstId} FOR UPDATE`
      await waitFor(
        async () => (await sql`SELECT 1 FROM worker_jobs WHERE id = ${secondId} AND (started IS NOT NULL OR now() > due + interval '1 second')`)[0],
        { timeoutMs: 5000, intervalMs: 20, what: 'the second job to start, or a second past its due time' },
      )
    })
    const [row] = await sql`SELECT started IS NOT NULL AS ran, extract(epoch FROM coalesce(started, now()) - due) * 1000 AS late_ms
      FROM worker_jobs WHERE id = ${secondId}`
    console.log(`[dueTimes] after a locked due row: the next job ${row!.ran ? `started ${Number(row!.late_ms).toFixed(1)} ms late` : 'had not started 1 s after its due time'}`)
    expect(row!.ran).toBe(true)
    expect(Number(row!.late_ms)).toBeLessThan(250)
    // And the locked one runs once its lock is gone (the poll is a minute away).
    await waitFor(async () => (await sql`SELECT 1 FROM worker_jobs WHERE id = ${firstId} AND finished IS NOT NULL`)[0], {
      timeoutMs: 3000,
      what: 'the once-locked job to run',
    })
  }, 20_000)
})
