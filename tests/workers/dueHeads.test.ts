import { afterAll, beforeAll, expect, test } from 'bun:test'
import { sql as dsql } from 'drizzle-orm'
import type postgres from 'postgres'
import { createDb, type DbHandle } from '../../src/server/db/client'
import { dueHeads } from '../../src/server/workers/queue/heads'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { sqlClient } from '../helpers/engine'

/**
 * The heads read of the worker loop (which claim gets the free slots first). A server whose every type is
 * limited has no common claim: its heads read leaves the claim index alone instead of walking it.
 */
let db: TestDatabase
let sql: postgres.Sql
let handle: DbHandle

beforeAll(async () => {
  db = await createTestDatabase('due_heads')
  sql = sqlClient(db.url)
  handle = createDb(db.url, { max: 1 })
  await sql`INSERT INTO worker_jobs (type, data, priority, due) SELECT 'plain', '{}', 0, now() - interval '1 minute' FROM generate_series(1, 500)`
  await sql`INSERT INTO worker_jobs (type, data, priority, due, concurrency_key) VALUES
            ('serial', '{}', 3, now() - interval '2 minutes', ''), ('serial', '{}', -2, now() - interval '1 second', 'a'),
            ('serial', '{}', -9, now() + interval '1 hour', 'b'), ('other', '{}', 0, now() + interval '1 hour', '')`
})
afterAll(async () => {
  await handle.close()
  await sql.end()
  await db.drop()
})

async function claimIndexReads(): Promise<number> {
  await handle.db.execute(dsql`SELECT pg_stat_force_next_flush()`)
  await handle.db.execute(dsql`SELECT pg_stat_clear_snapshot()`)
  const [row] = (await handle.db.execute(
    dsql`SELECT idx_scan AS n FROM pg_stat_user_indexes WHERE indexrelname = 'worker_jobs_claim_idx'`,
  )) as unknown as { n: string }[]
  return Number(row!.n)
}

test('each head is the most urgent due row of its claim: future rows do not count, priority before due time', async () => {
  const heads = await dueHeads(handle.db, ['plain'], ['serial', 'other'])
  const [serialHead] = await sql`SELECT id FROM worker_jobs WHERE type = 'serial' AND priority = -2`
  expect(heads.common?.priority).toBe(0)
  expect(heads.limited.get('serial')).toMatchObject({ priority: -2, id: Number(serialHead!.id) })
  expect(heads.limited.has('other')).toBe(false)
})

test('without common types: no common head, the limited heads as before, and the claim index is not read', async () => {
  const before = await claimIndexReads()
  const heads = await dueHeads(handle.db, [], ['serial'])
  expect(await claimIndexReads()).toBe(before)
  expect(heads.common).toBeNull()
  expect(heads.limited.get('serial')?.priority).toBe(-2)
})
