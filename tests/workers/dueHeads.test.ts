import { afterAll, beforeAll, expect, test } from 'bun:test'
import type postgres from 'postgres'
import type { DbHandle } from '../../src/server/db/client'
import { sql as dsql } from 'drizzle-orm'
import { dueHeads, mostUrgentDuePriority } from '../../src/server/workers/queue/heads'
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

/** The hand-off's priority bound (queue/handoff.ts) over the rows of this file, evaluated alone. */
async function boundOf(common: string[], limited: string[]): Promise<number | null> {
  const [row] = (await handle.db.execute(dsql`SELECT ${mostUrgentDuePriority(common, limited)} AS b`)) as unknown as { b: number | null }[]
  return row!.b === null ? null : Number(row!.b)
}

test("the hand-off's bound is the most urgent due priority of the other claims; future rows do not count", async () => {
  expect(await boundOf(['plain'], ['serial'])).toBe(-2)
  expect(await boundOf(['plain'], ['other'])).toBe(0)
  expect(await boundOf([], ['other'])).toBeNull()
  expect(await boundOf(['nothing-of-it'], [])).toBeNull()
  expect(mostUrgentDuePriority([], [])).toBeNull()
})

test("the hand-off's bound reads a few entries of the claim index, not every due row", async () => {
  // 500 due rows at priority 0: as an EXISTS, the planner hashed all of them (a semi-join) on every
  // hand-off; the LATERAL stops at the first.
  const before = await claimIndexReads()
  expect(await boundOf(['plain'], [])).toBe(0)
  expect((await claimIndexReads()) - before).toBeLessThan(10)
})
