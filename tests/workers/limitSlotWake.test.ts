import { afterAll, beforeAll, expect, test } from 'bun:test'
import type postgres from 'postgres'
import type { ServerApp } from '../../src/server/serverApp'
import { rescueJobs } from '../../src/server/workers/queue/rescue'
import { submitJob } from '../../src/server/workers/queue/submit'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { CREATE_RUNS_TABLE, sqlClient } from '../helpers/engine'
import { appWith, limitedType, loopOf } from '../helpers/loops'
import { waitFor } from '../helpers/wait'

/**
 * A job held back by a concurrency limit starts as soon as the slot frees, whichever way it frees. The
 * rescuer may free it without sending the row back to pending: it fails the row (a type with
 * rerunOnInterrupt: false) or finishes it as cancelled (its cancel was requested). Neither wrote a NOTIFY
 * before, so the held-back job waited for the poll (a minute here).
 */
let db: TestDatabase
let sql: postgres.Sql
let app: ServerApp

beforeAll(async () => {
  db = await createTestDatabase('limit_slot_wake')
  sql = sqlClient(db.url)
  await sql.unsafe(CREATE_RUNS_TABLE)
  app = await appWith(db.url, [limitedType('oneShot', { concurrency: 1, rerunOnInterrupt: false }), limitedType('oneAtATime', { concurrency: 1 })])
})
afterAll(async () => {
  await app.dbHandle.close()
  await sql.end()
  await db.drop()
})

const DEAD = 'deadhost/1/w0/gone'

async function heldBackStartsAfterRescue(type: string, cancelRequested: boolean): Promise<void> {
  // The slot is taken by a row of a worker that died (as a crashed child leaves it).
  const [dead] = await sql`
    INSERT INTO worker_jobs (type, data, concurrency_key, started, locked_by, lease_expires_at, cancelled_at)
    VALUES (${type}, '{}', '', now(), ${DEAD}, now() + interval '1 minute', ${cancelRequested ? sql`now()` : null})
    RETURNING id`
  const w = loopOf(app, db.url, { concurrency: 4, pollIntervalMs: 60_000 })
  await w.loop.start()
  try {
    const rounds = w.loop.claimRounds
    const waiting = await submitJob(app.db, app.registry, { type, data: {} })
    // The loop has looked since the submit's NOTIFY and parked: the limit holds the job back.
    await waitFor(() => w.loop.claimRounds > rounds && w.loop.parked, { what: 'the loop to look and park' })
    expect((await sql`SELECT started FROM worker_jobs WHERE id = ${waiting.id}`)[0]!.started).toBeNull()

    const rescued = await rescueJobs(app.db, app.registry, { workerIds: [DEAD] }, 'worker process exited')
    expect(cancelRequested ? rescued.cancelled : rescued.failed).toEqual([Number(dead!.id)])
    // Well inside the one-minute poll: only a NOTIFY can start it this soon.
    await waitFor(async () => (await sql`SELECT 1 FROM worker_jobs WHERE id = ${waiting.id} AND started IS NOT NULL`).length > 0, {
      timeoutMs: 10_000,
      what: `the held-back ${type} job to start after the rescuer freed its slot`,
    })
  } finally {
    await w.stop()
  }
}

test('the rescuer fails a limited row (rerunOnInterrupt: false): the held-back job starts at once', async () => {
  await heldBackStartsAfterRescue('oneShot', false)
}, 30_000)

test('the rescuer finishes a limited row as cancelled: the held-back job starts at once', async () => {
  await heldBackStartsAfterRescue('oneAtATime', true)
}, 30_000)
