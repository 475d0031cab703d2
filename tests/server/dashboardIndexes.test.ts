import { afterAll, beforeAll, expect, test } from 'bun:test'
import { createDb, type DbHandle } from '../../src/server/db/client'
import { finishedPerMinute, jobChain } from '../../src/server/graphql/jobQueries'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { seqScanCount } from '../helpers/plans'

/**
 * The dashboard's queries stay cheap on a big table: finishedPerMinute reads the last hour through
 * worker_jobs_finished_at_idx and jobChain its links through the primary key and
 * worker_jobs_rescheduled_from_idx, with no sequential scan of worker_jobs (counted by Postgres itself).
 */

let db: TestDatabase
let handle: DbHandle
let middle = 0

beforeAll(async () => {
  db = await createTestDatabase('dashboard_indexes')
  handle = createDb(db.url, { max: 1 })
  const sql = handle.client
  await sql`INSERT INTO worker_jobs (type, user_id, started, finished, success)
            SELECT 'old', 0, now() - interval '3 days', now() - interval '3 days', true FROM generate_series(1, 20000)`
  await sql`INSERT INTO worker_jobs (type, user_id, started, finished, success)
            VALUES ('recent', 0, now() - interval '2 minutes', now() - interval '2 minutes', true), ('recent', 0, now(), now(), false)`
  const [a] = await sql`INSERT INTO worker_jobs (type, user_id, finished, success) VALUES ('chain', 0, now() - interval '3 days', false) RETURNING id`
  const [b] = await sql`INSERT INTO worker_jobs (type, user_id, finished, success, rescheduled_from_job) VALUES ('chain', 0, now() - interval '3 days', false, ${a!.id}) RETURNING id`
  await sql`INSERT INTO worker_jobs (type, user_id, rescheduled_from_job) VALUES ('chain', 0, ${b!.id})`
  middle = Number(b!.id)
  await sql`ANALYZE worker_jobs`
})

afterAll(async () => {
  await handle?.close()
  await db?.drop()
})

test('finishedPerMinute reads only the window, through its index', async () => {
  const before = await seqScanCount(handle.client)
  const buckets = await finishedPerMinute(handle.db, 60)
  expect(buckets).toHaveLength(60)
  expect(buckets.reduce((n, b) => n + b.succeeded, 0)).toBe(1)
  expect(buckets.at(-1)!.failed).toBe(1)
  expect(await seqScanCount(handle.client)).toBe(before)
})

test('jobChain walks both ways without a sequential scan', async () => {
  const before = await seqScanCount(handle.client)
  const chain = await jobChain(handle.db, middle, 50)
  expect(chain!.older).toHaveLength(1)
  expect(chain!.newer).toHaveLength(1)
  expect(await seqScanCount(handle.client)).toBe(before)
})
