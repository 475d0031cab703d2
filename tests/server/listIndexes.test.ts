import { afterAll, beforeAll, expect, test } from 'bun:test'
import { createDb, type DbHandle } from '../../src/server/db/client'
import { listJobs } from '../../src/server/graphql/jobQueries'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { seqScanCount } from '../helpers/plans'

/**
 * jobs(filter) reads each state through its own index: listing a rare type, or one user's jobs, in a
 * table of many other rows makes no sequential scan of worker_jobs (counted by Postgres itself).
 */

let db: TestDatabase
let handle: DbHandle

beforeAll(async () => {
  db = await createTestDatabase('list_indexes')
  // One connection, so the statistics this backend flushes are those of the queries under test.
  handle = createDb(db.url, { max: 1 })
  const sql = handle.client
  await sql`INSERT INTO worker_jobs (type, user_id, started, finished, success)
            SELECT 'common', 0, now(), now(), true FROM generate_series(1, 20000)`
  await sql`INSERT INTO worker_jobs (type, user_id, due) SELECT 'common', 0, now() + interval '1 day' FROM generate_series(1, 5000)`
  await sql`INSERT INTO worker_jobs (type, user_id, started, finished, success) VALUES ('rare', 7, now(), now(), false), ('rare', 0, now(), now(), true)`
  await sql`INSERT INTO worker_jobs (type, user_id, due, tag) VALUES ('rare', 7, now() + interval '1 day', 'mine'), ('common', 7, now() + interval '1 day', null)`
  // A pending row of a limited type sits in the limited index, not the claim index.
  await sql`INSERT INTO worker_jobs (type, user_id, concurrency_key) VALUES ('limitedRare', 7, 'k')`
  await sql`ANALYZE worker_jobs`
})

afterAll(async () => {
  await handle?.close()
  await db?.drop()
})

const page = { limit: 50, offset: 0, newestFirst: true }

test.each([
  ['a rare type', { type: 'rare' }, 3, 3],
  ['a limited type, pending', { type: 'limitedRare', status: 'PENDING' as const }, 1, 1],
  ['a rare type, finished', { type: 'rare', status: 'FAILED' as const }, 1, 1],
  ["a user's jobs", { userId: 7 }, 4, 4],
  ["a user's pending jobs", { userId: 7, status: 'PENDING' as const }, 3, 3],
  ["a user's jobs of a type", { userId: 7, type: 'rare' }, 2, 2],
  ['a tag', { tag: 'mine' }, 1, 1],
])('%s: found through indexes, with the right total', async (_name, filter, items, total) => {
  const before = await seqScanCount(handle.client)
  const res = await listJobs(handle.db, filter, page)
  expect(res.items).toHaveLength(items)
  expect(res.total).toBe(total)
  expect(await seqScanCount(handle.client)).toBe(before)
})

test('pages merge the states in id order, newest or oldest first', async () => {
  const newest = await listJobs(handle.db, { userId: 7 }, { limit: 2, offset: 0, newestFirst: true })
  const next = await listJobs(handle.db, { userId: 7 }, { limit: 2, offset: 2, newestFirst: true })
  const ids = [...newest.items, ...next.items].map((j) => j.id)
  expect(ids).toEqual([...ids].sort((a, b) => b - a))
  expect(ids).toHaveLength(4)
  const oldest = await listJobs(handle.db, { userId: 7 }, { limit: 4, offset: 0, newestFirst: false })
  expect(oldest.items.map((j) => j.id)).toEqual([...ids].reverse())
})

test('the counter does see a sequential scan when one happens (the checks above can fail)', async () => {
  const before = await seqScanCount(handle.client)
  await handle.client`SELECT count(*) FROM worker_jobs WHERE data->>'x' = 'y'`
  expect(await seqScanCount(handle.client)).toBe(before + 1)
})
