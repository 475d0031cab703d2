import { afterAll, beforeAll, expect, test } from 'bun:test'
import type postgres from 'postgres'
import type { DbHandle } from '../../src/server/db/client'
import { dueHeads } from '../../src/server/workers/queue/heads'
import { indexTuplesRead } from '../helpers/plans'
import { openTestDb } from '../helpers/testDb'

/**
 * The heads read of the worker loop (which claim gets the free slots first). A server whose every type is
 * limited has no common claim: its heads read leaves the claim index alone instead of walking it.
 */
let t: Awaited<ReturnType<typeof openTestDb>>
let sql: postgres.Sql
let handle: DbHandle

beforeAll(async () => {
  t = await openTestDb('due_heads', 1)
  ;({ sql, handle } = t)
  await sql`INSERT INTO worker_jobs (type, data, priority, due) SELECT 'plain', '{}', 0, now() - interval '1 minute' FROM generate_series(1, 500)`
  await sql`INSERT INTO worker_jobs (type, data, priority, due, concurrency_key) VALUES
            ('serial', '{}', 3, now() - interval '2 minutes', ''), ('serial', '{}', -2, now() - interval '1 second', 'a'),
            ('serial', '{}', -9, now() + interval '1 hour', 'b'), ('other', '{}', 0, now() + interval '1 hour', '')`
})
afterAll(() => t.close())

const claimIndexReads = async () => (await indexTuplesRead(handle.db)).worker_jobs_claim_idx!

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
