import { afterAll, beforeAll, expect, test } from 'bun:test'
import type postgres from 'postgres'
import type { ServerApp } from '../../src/server/serverApp'
import { limitedClaimStatement, limitOf } from '../../src/server/workers/queue/limits'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { sqlClient } from '../helpers/engine'
import { appWith, limitedType } from '../helpers/loops'
import { planOf } from '../helpers/plans'

/**
 * The limited claim reads no more rows than it may start. A type-wide limit puts every row under the one
 * key '', and that key's LATERAL was capped only by the per-key limit (none: 2^31-1), so every claim read
 * and sorted the type's whole due backlog to keep one row, under the type's advisory lock (every claim of
 * the type in the cluster waits behind it). Read from the plan's actual row counts, not from timings.
 */
let db: TestDatabase
let sql: postgres.Sql
let app: ServerApp
const BACKLOG = 20_000

beforeAll(async () => {
  db = await createTestDatabase('limited_claim_plan')
  sql = sqlClient(db.url)
  app = await appWith(db.url, [
    limitedType('typeWide', { concurrency: 3 }),
    limitedType('manyPerKey', { concurrencyKey: () => 'one', keyConcurrency: 1000 }),
  ])
  await sql`INSERT INTO worker_jobs (type, data, concurrency_key) SELECT 'typeWide', '{}', '' FROM generate_series(1, ${BACKLOG}::int)`
  await sql`INSERT INTO worker_jobs (type, data, concurrency_key) SELECT 'manyPerKey', '{}', 'one' FROM generate_series(1, ${BACKLOG}::int)`
  await sql`ANALYZE worker_jobs`
}, 60_000)
afterAll(async () => {
  await app.dbHandle.close()
  await sql.end()
  await db.drop()
})

/** The most rows any node of the plan read from worker_jobs_limited_idx in one loop. */
function mostRowsFromLimitedIndex(node: any): number {
  const own = node['Index Name'] === 'worker_jobs_limited_idx' ? node['Actual Rows'] : 0
  return Math.max(own, ...(node.Plans ?? []).map(mostRowsFromLimitedIndex))
}

async function claimPlan(type: string, limit: number) {
  const opts = { workerId: 'plan/1/w0/x', leaseMs: 10_000, limit, types: [type], type, limits: limitOf(app.registry[type])! }
  return planOf(app.db, limitedClaimStatement(opts), { analyze: true })
}

test(`a type-wide limit: claiming 1 of ${BACKLOG.toLocaleString()} due rows reads 1 row, not the backlog`, async () => {
  const plan = await claimPlan('typeWide', 1)
  expect(mostRowsFromLimitedIndex(plan)).toBeLessThanOrEqual(1)
})

test('a type-wide limit: the claim reads no more than the type may start (3), whatever slots the worker has', async () => {
  const plan = await claimPlan('typeWide', 250)
  expect(mostRowsFromLimitedIndex(plan)).toBeLessThanOrEqual(3)
})

test('a key with a large keyConcurrency: one key gives no more rows than the claim keeps', async () => {
  const plan = await claimPlan('manyPerKey', 5)
  expect(mostRowsFromLimitedIndex(plan)).toBeLessThanOrEqual(5)
})
