import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'bun:test'
import { drizzle } from 'drizzle-orm/postgres-js'
import postgres from 'postgres'
import type { Database } from '../../src/server/db/client'
import * as schema from '../../src/server/db/schema'
import { claimJobs, nextLook } from '../../src/server/workers/queue/claim'
import { createTestDatabase, type TestDatabase } from '../helpers/db'

/**
 * The claim never takes more rows than its LIMIT, even under the plan that used to break it: a
 * nested-loop semi-join that rescans the locking subquery once per outer row. The session settings below
 * leave the planner no other way to run `UPDATE … WHERE id IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)`.
 */
let db: TestDatabase
let raw: postgres.Sql
let badPlanDb: Database

const BAD_PLAN = { enable_hashjoin: 'off', enable_mergejoin: 'off', enable_hashagg: 'off', enable_sort: 'off', enable_material: 'off' }

beforeAll(async () => {
  db = await createTestDatabase('claim')
  raw = postgres(db.url, { max: 1, onnotice: () => {}, connection: BAD_PLAN })
  badPlanDb = drizzle(raw, { schema }) as unknown as Database
})
afterAll(async () => {
  await raw.end()
  await db.drop()
})
beforeEach(async () => {
  await raw`TRUNCATE worker_jobs`
  // Statistics from an empty table, then rows: the stale estimate that makes the nested loop look cheap.
  await raw`ANALYZE worker_jobs`
  await raw`INSERT INTO worker_jobs (type, data) SELECT 'noop', '{}' FROM generate_series(1, 200)`
})

const started = async () => (await raw`SELECT count(*)::int AS n FROM worker_jobs WHERE started IS NOT NULL`)[0]!.n

describe('the claim under a forced bad plan', () => {
  test('control: the old statement, on this session, claims far more than LIMIT 1', async () => {
    const old = await raw.unsafe(`UPDATE worker_jobs SET started = now(), locked_by = 'old' WHERE id IN (
      SELECT id FROM worker_jobs WHERE started IS NULL AND finished IS NULL AND concurrency_key IS NULL AND due <= now()
      ORDER BY priority, due, id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id`)
    expect(old.length).toBeGreaterThan(1)
  })

  test('claimJobs takes exactly its limit, the oldest first', async () => {
    for (const limit of [1, 7]) {
      const before = await started()
      const claimed = await claimJobs(badPlanDb, { workerId: 'w', limit, leaseMs: 5000, types: ['noop'] })
      expect(claimed).toHaveLength(limit)
      expect(await started()).toBe(before + limit)
    }
    const ids = (await raw`SELECT id FROM worker_jobs WHERE started IS NOT NULL ORDER BY id`).map((r) => Number(r.id))
    const first = Number((await raw`SELECT min(id) AS id FROM worker_jobs`)[0]!.id)
    expect(ids).toEqual(Array.from({ length: 8 }, (_, k) => first + k))
  })
})

describe('types', () => {
  test('a worker claims only the types it registers, and sleeps past the others', async () => {
    await raw`TRUNCATE worker_jobs`
    await raw`INSERT INTO worker_jobs (type, due) VALUES ('unknownToUs', now() - interval '1 minute'), ('noop', now() + interval '1 hour')`
    expect(await claimJobs(badPlanDb, { workerId: 'w', limit: 10, leaseMs: 5000, types: ['noop'] })).toHaveLength(0)
    // The next look ignores the row it cannot run, so the loop neither spins nor retries for it.
    const look = await nextLook(badPlanDb, ['noop'])
    expect(look.lockedDue).toBe(false)
    expect(look.nextDue!.getTime()).toBeGreaterThan(Date.now() + 3_500_000)
    const [waiting] = await raw`SELECT started, finished FROM worker_jobs WHERE type = 'unknownToUs'`
    expect(waiting).toEqual({ started: null, finished: null })
  })
})

describe('the next look', () => {
  test('a due row we could not take (locked by another claim) is reported, and never hides the next due time', async () => {
    await raw`TRUNCATE worker_jobs`
    const [locked] = await raw`INSERT INTO worker_jobs (type, due) VALUES ('noop', now() - interval '1 second') RETURNING id`
    await raw`INSERT INTO worker_jobs (type, due) VALUES ('noop', now() + interval '1 minute')`
    const other = postgres(db.url, { max: 1, onnotice: () => {} })
    try {
      await other.begin(async (tx) => {
        await tx`SELECT id FROM worker_jobs WHERE id = ${locked!.id} FOR UPDATE`
        expect(await claimJobs(badPlanDb, { workerId: 'w', limit: 5, leaseMs: 5000, types: ['noop'] })).toHaveLength(0)
        const look = await nextLook(badPlanDb, ['noop'])
        expect(look.lockedDue).toBe(true)
        expect(look.nextDue!.getTime()).toBeGreaterThan(Date.now() + 50_000)
      })
    } finally {
      await other.end()
    }
  })
})
