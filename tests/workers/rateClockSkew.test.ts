import { afterAll, beforeAll, expect, test } from 'bun:test'
import type postgres from 'postgres'
import type { ServerApp } from '../../src/server/serverApp'
import { submitJob } from '../../src/server/workers/queue/submit'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { CREATE_RUNS_TABLE, sqlClient } from '../helpers/engine'
import { appWith, limitedType, loopOf } from '../helpers/loops'
import { waitFor } from '../helpers/wait'

/**
 * A worker held back by a rate looks again when the window's oldest start leaves it. That moment came back
 * as a time on the database's clock, and the worker set its timer with its own: a server whose clock ran
 * ahead woke early and claimed in vain every 5 ms until its clock caught up (a few hundred transactions a
 * second, each under the type's lock). It now comes back as a delay.
 */
let db: TestDatabase
let sql: postgres.Sql
let app: ServerApp
const AHEAD_MS = 1500

beforeAll(async () => {
  db = await createTestDatabase('rate_clock_skew')
  sql = sqlClient(db.url)
  await sql.unsafe(CREATE_RUNS_TABLE)
  app = await appWith(db.url, [limitedType('paced', { rateLimit: { max: 1, perMs: 2000 } })])
})
const realNow = Date.now
afterAll(async () => {
  Date.now = realNow
  await app.dbHandle.close()
  await sql.end()
  await db.drop()
})

test(`a worker whose clock is ${AHEAD_MS} ms ahead of the database's waits for the window, without claiming in vain`, async () => {
  // This process's wall clock runs ahead; its timers (monotonic) and the database's clock do not.
  Date.now = () => realNow() + AHEAD_MS
  const w = loopOf(app, db.url, { concurrency: 4, pollIntervalMs: 60_000 })
  let queries = 0
  const run = w.queue.run.bind(w.queue)
  w.queue.run = ((fn: Parameters<typeof run>[0]) => {
    queries++
    return run(fn)
  }) as typeof w.queue.run
  await w.loop.start()
  try {
    const [first, second] = await Promise.all([
      submitJob(app.db, app.registry, { type: 'paced', data: { key: 'a' } }),
      submitJob(app.db, app.registry, { type: 'paced', data: { key: 'b' } }),
    ])
    const started = async (id: number) => (await sql`SELECT started FROM worker_jobs WHERE id = ${id}`)[0]!.started as Date | null
    const t1 = await waitFor(async () => (await started(first!.id)) ?? (await started(second!.id)), { what: 'the first job to start' })
    const before = queries
    const t2 = await waitFor(async () => {
      const [a, b] = [await started(first!.id), await started(second!.id)]
      return a && b ? new Date(Math.max(a.getTime(), b.getTime())) : null
    }, { timeoutMs: 10_000, what: 'the second job to start when the window moved on' })
    // Both times are the database's: the rate held (one start per 2 s)...
    expect(t2.getTime() - t1.getTime()).toBeGreaterThanOrEqual(2000)
    // ...and the wait cost a handful of statements, not one claim every 5 ms for the skew (about 300).
    expect(queries - before).toBeLessThan(20)
  } finally {
    Date.now = realNow
    await w.stop()
  }
}, 30_000)
