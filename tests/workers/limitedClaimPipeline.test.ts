import { afterAll, beforeAll, expect, test } from 'bun:test'
import { sql as dsql } from 'drizzle-orm'
import type postgres from 'postgres'
import { type DbHandle, pipelinedTransaction } from '../../src/server/db/client'
import { claimLimited, type TypeLimit } from '../../src/server/workers/queue/limits'
import { openTestDb } from '../helpers/testDb'
import { waitFor } from '../helpers/wait'

/**
 * The limited claim's lock, prune and claim go to the server in one round trip (pipelined) instead of one
 * each. What must still hold: the claim's snapshot is taken after the type's lock is granted, so it counts
 * every claim committed before; a failing statement leaves nothing behind; and a connection lost while the
 * claim waits claims nothing and leaves the pool usable.
 */
let t: Awaited<ReturnType<typeof openTestDb>>
let sql: postgres.Sql
let handle: DbHandle

beforeAll(async () => {
  t = await openTestDb('limited_pipeline', 2)
  ;({ sql, handle } = t)
})
afterAll(() => t.close())

const FIXTURE = new URL('../fixtures/limitedClaimTwice.ts', import.meta.url).pathname
const limits: TypeLimit = { concurrency: 1, perKey: null, rate: null, keyRate: null }
const opts = { workerId: 'pipe/1', leaseMs: 60_000, limit: 5, types: ['serial'], type: 'serial', limits }

test("a claim that waits on the type's lock counts the row the holder started, and takes nothing past the limit", async () => {
  await sql`DELETE FROM worker_jobs`
  const [a, b] = await sql`INSERT INTO worker_jobs (type, data, concurrency_key) SELECT 'serial', '{}', '' FROM generate_series(1, 2) RETURNING id`
  // Another server's claim: it holds the lock and starts row a, but has not committed yet.
  const holder = await sql.reserve()
  try {
    await holder`BEGIN`
    await holder`SELECT pg_advisory_xact_lock(hashtextextended(${'worker_jobs.limit:serial'}, 0))`
    await holder`UPDATE worker_jobs SET started = now(), locked_by = 'other', lease_expires_at = now() + interval '1 minute' WHERE id = ${a!.id}`
    const claim = claimLimited(handle.db, opts)
    // The claim is sent, and waits for the lock.
    await waitFor(
      async () => (await sql`SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`).length > 0,
      { what: 'the claim waiting on the lock' },
    )
    await holder`COMMIT`
    const got = await claim
    // Its snapshot came after the lock: row a is running, so the limit of 1 leaves no room for row b.
    expect(got.jobs).toEqual([])
    const [running] = await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE started IS NOT NULL AND finished IS NULL`
    expect(running!.n).toBe(1)
    const [rowB] = await sql`SELECT started FROM worker_jobs WHERE id = ${b!.id}`
    expect(rowB!.started).toBeNull()
  } finally {
    holder.release()
  }
})

test('a failing statement rolls back the ones before it and throws its own error; the connection stays usable', async () => {
  await sql`DELETE FROM worker_jobs`
  const insert = dsql`INSERT INTO worker_jobs (type, data) VALUES ('plain', '{}')`
  await expect(pipelinedTransaction(handle.db, [insert, dsql`SELECT 1 / 0`, insert])).rejects.toThrow('division by zero')
  const [n] = await sql`SELECT count(*)::int AS n FROM worker_jobs`
  expect(n!.n).toBe(0)
  const [rows] = await pipelinedTransaction(handle.db, [dsql`SELECT 41 + 1 AS answer`])
  expect(rows).toEqual([{ answer: 42 }])
})

test("a connection killed while the claim waits on the type's lock: the claim fails, claims nothing, the process lives on and its next claim works", async () => {
  await sql`DELETE FROM worker_jobs`
  await sql`INSERT INTO worker_jobs (type, data, concurrency_key) SELECT 'serial', '{}', '' FROM generate_series(1, 2)`
  const waiter = async () =>
    (
      await sql`SELECT l.pid FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND NOT l.granted AND a.datname = current_database()`
    )[0]?.pid as number | undefined
  const holder = await sql.reserve()
  // A process of its own, as a worker is: postgres.js may throw from a write it had scheduled on the killed
  // connection, which the worker's guard ignores (a test runner would count it as a failure of its own).
  const proc = Bun.spawn([process.execPath, FIXTURE, t.db.url], { stdout: 'pipe', stderr: 'pipe' })
  const lines = proc.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(splitLines()).getReader()
  try {
    await holder`BEGIN`
    await holder`SELECT pg_advisory_xact_lock(hashtextextended(${'worker_jobs.limit:serial'}, 0))`
    await sql`SELECT pg_terminate_backend(${await waitFor(waiter, { what: 'the first claim waiting on the lock' })})`
    const first = JSON.parse((await lines.read()).value!)
    expect(first.error).toBeString()
    // The second claim waits on the lock too; nothing was claimed meanwhile.
    await waitFor(waiter, { what: 'the second claim waiting on the lock' })
    const [started] = await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE started IS NOT NULL`
    expect(started!.n).toBe(0)
    await holder`COMMIT`
    expect(JSON.parse((await lines.read()).value!)).toEqual({ claimed: 1 })
    expect(await proc.exited).toBe(0)
  } finally {
    holder.release()
    proc.kill()
  }
})

/** Splits a text stream into lines. */
function splitLines(): TransformStream<string, string> {
  let rest = ''
  return new TransformStream({
    transform(chunk, out) {
      const parts = (rest + chunk).split('\n')
      rest = parts.pop()!
      for (const p of parts) if (p.trim()) out.enqueue(p)
    },
  })
}
