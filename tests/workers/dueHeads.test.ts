import { afterAll, beforeAll, expect, test } from 'bun:test'
import type postgres from 'postgres'
import type { DbHandle } from '../../src/server/db/client'
import { dueHeads, otherHeadsBound } from '../../src/server/workers/queue/heads'
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

/** The hand-off's bound (queue/handoff.ts) over the rows of this file, evaluated alone: its row, or null. */
async function boundOf(common: string[], limited: string[]): Promise<{ priority: number; id: number } | null> {
  const rows = (await handle.db.execute(otherHeadsBound(common, limited)!)) as unknown as { priority: number; id: string }[]
  return rows[0] ? { priority: Number(rows[0].priority), id: Number(rows[0].id) } : null
}

test("the hand-off's bound is the most urgent due head of the other claims, in (priority, due, id) order", async () => {
  const [serialHead] = await sql`SELECT id FROM worker_jobs WHERE type = 'serial' AND priority = -2`
  const [plainHead] = await sql`SELECT id FROM worker_jobs WHERE type = 'plain' ORDER BY due, id LIMIT 1`
  expect(await boundOf(['plain'], ['serial'])).toEqual({ priority: -2, id: Number(serialHead!.id) })
  expect(await boundOf(['plain'], ['other'])).toEqual({ priority: 0, id: Number(plainHead!.id) })
  // Future rows are no head: nothing of theirs is due.
  expect(await boundOf([], ['other'])).toBeNull()
  expect(await boundOf(['nothing-of-it'], [])).toBeNull()
  expect(otherHeadsBound([], [])).toBeNull()
})

test("the hand-off's bound reads a few entries of the claim index, not every due row", async () => {
  // 500 due rows at priority 0. The first version, an EXISTS over them, was planned as a hash semi-join
  // that read every one on every hand-off (501 entries here; 130-250 ms inside a 200,000-job flood).
  const before = await claimIndexReads()
  expect((await boundOf(['plain'], []))?.priority).toBe(0)
  expect((await claimIndexReads()) - before).toBeLessThan(10)
})
