import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'bun:test'
import type postgres from 'postgres'
import type { ServerApp } from '../../src/server/serverApp'
import { insertJobs, lockTags } from '../../src/server/workers/queue/insert'
import { seedCronJob } from '../../src/server/workers/queue/seed'
import { JobInputError, submitBuiltInJob, validateJobInput } from '../../src/server/workers/queue/submit'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { sqlClient, testServerApp } from '../helpers/engine'
import { waitFor } from '../helpers/wait'

/** Tags belong to their user, and the built-in schedules' `system:` tags to the built-in jobs alone. */

let db: TestDatabase
let app: ServerApp
let sql: postgres.Sql

beforeAll(async () => {
  db = await createTestDatabase('tags')
  app = await testServerApp(db.url)
  sql = sqlClient(db.url)
})
afterAll(async () => {
  await app?.dbHandle.close()
  await sql?.end()
  await db?.drop()
})
beforeEach(async () => {
  await sql`TRUNCATE worker_jobs`
})

const later = () => new Date(Date.now() + 3600_000)
/** The pending rows holding `tag`, as plain objects, by user then id. */
const pendingOf = async (tag: string): Promise<Record<string, any>[]> => [
  ...(await sql`SELECT id::int, user_id, type, cron_schedule FROM worker_jobs WHERE tag = ${tag} AND started IS NULL AND finished IS NULL ORDER BY user_id, id`),
]

async function inputError(p: Promise<unknown>): Promise<JobInputError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(JobInputError)
  return err as JobInputError
}

describe('the reserved system: prefix', () => {
  test('submitJob and submitJobs refuse a system: tag, naming the field; nothing is written', async () => {
    await seedCronJob(app.db, { type: 'watchChain', cronSchedule: '*/30 * * * * *' })
    const [seeded] = await pendingOf('system:watchChain')
    for (const tag of ['system:watchChain', 'system:removeOldWorkerJobs', 'system:deployMulticall3', 'system:anything']) {
      const err = await inputError(app.workerManager.submitJob({ type: 'noop', userId: 0, tag }))
      expect(err.field).toBe('tag')
      expect(err.message).toContain('reserved')
      expect(err.message).toContain('"system:"')
    }
    const batchErr = await inputError(app.workerManager.submitJobs([{ type: 'noop' }, { type: 'watchChain', tag: 'system:watchChain' }]))
    expect(batchErr.field).toBe('jobs[1].tag')
    // The built-in row is untouched and alone.
    expect(await pendingOf('system:watchChain')).toEqual([seeded!])
    expect((await sql`SELECT count(*)::int AS n FROM worker_jobs`)[0]!.n).toBe(1)
  })

  test('a tag that merely contains system: elsewhere, or a differently cased prefix, is an ordinary tag', async () => {
    // Tags are compared exactly, so neither can ever be a built-in schedule's tag.
    for (const tag of ['my-system:watchChain', 'System:watchChain']) {
      const job = await app.workerManager.submitJob({ type: 'noop', tag, due: later() })
      expect(job.tag).toBe(tag)
    }
  })
})

describe('tags are scoped to their user', () => {
  test('two users with the same tag each keep their pending row', async () => {
    const a = await app.workerManager.submitJob({ type: 'noop', userId: 1, tag: 'x', due: later() })
    const b = await app.workerManager.submitJob({ type: 'noop', userId: 2, tag: 'x', due: later() })
    expect((await pendingOf('x')).map((r) => r.id)).toEqual([a.id, b.id])
  })

  test("user A's submit with tag 'x' cancels A's pending row, never B's", async () => {
    const a1 = await app.workerManager.submitJob({ type: 'noop', userId: 1, tag: 'x', due: later() })
    const b = await app.workerManager.submitJob({ type: 'noop', userId: 2, tag: 'x', due: later() })
    const a2 = await app.workerManager.submitJob({ type: 'noop', userId: 1, tag: 'x', due: later() })
    expect((await pendingOf('x')).map((r) => r.id)).toEqual([a2.id, b.id])
    const [cancelled] = await sql`SELECT finished, success, result FROM worker_jobs WHERE id = ${a1.id}`
    expect(cancelled!.finished).not.toBeNull()
    expect(cancelled!.success).toBe(false)
    expect(cancelled!.result).toEqual({ error: `cancelled: replaced by job ${a2.id}` })
    const [untouched] = await sql`SELECT finished, result FROM worker_jobs WHERE id = ${b.id}`
    expect(untouched).toEqual({ finished: null, result: null })
  })

  test('one batch may hold the same tag for two users, each replacing only its own user', async () => {
    const old1 = await app.workerManager.submitJob({ type: 'noop', userId: 1, tag: 'daily', due: later() })
    const old2 = await app.workerManager.submitJob({ type: 'noop', userId: 2, tag: 'daily', due: later() })
    const [n1, n2] = await app.workerManager.submitJobs([
      { type: 'noop', userId: 1, tag: 'daily', due: later() },
      { type: 'noop', userId: 2, tag: 'daily', due: later() },
    ])
    expect((await pendingOf('daily')).map((r) => r.id)).toEqual([n1!.id, n2!.id])
    const results = [...(await sql`SELECT id::int, result FROM worker_jobs WHERE id IN ${sql([old1.id, old2.id])} ORDER BY id`)]
    expect(results).toEqual([
      { id: old1.id, result: { error: `cancelled: replaced by job ${n1!.id}` } },
      { id: old2.id, result: { error: `cancelled: replaced by job ${n2!.id}` } },
    ])
    // The same tag twice for one user in one batch is refused.
    const err = await inputError(
      app.workerManager.submitJobs([
        { type: 'noop', userId: 3, tag: 'twice' },
        { type: 'noop', userId: 3, tag: 'twice' },
      ]),
    )
    expect(err.field).toBe('jobs[1].tag')
  })

  test('concurrent submits of one tag by two users leave exactly one pending row per user', async () => {
    await Promise.all(
      Array.from({ length: 20 }, (_, i) => app.workerManager.submitJob({ type: 'noop', userId: 1 + (i % 2), tag: 'race', due: later() })),
    )
    expect((await pendingOf('race')).map((r) => r.user_id)).toEqual([1, 2])
  })

  test("the tag lock is per user: user 1 holding tag 't' does not block user 2's submit of 't'", async () => {
    let release!: () => void
    const released = new Promise<void>((r) => {
      release = r
    })
    let locked!: () => void
    const isLocked = new Promise<void>((r) => {
      locked = r
    })
    const holder = app.db.transaction(async (tx) => {
      await lockTags(tx, [{ userId: 1, tag: 't' }])
      locked()
      await released
    })
    await isLocked
    // User 2 goes straight through while user 1's lock is held…
    const other = await app.workerManager.submitJob({ type: 'noop', userId: 2, tag: 't', due: later() })
    expect(other.userId).toBe(2)
    // …user 1 waits for it.
    const same = app.workerManager.submitJob({ type: 'noop', userId: 1, tag: 't', due: later() })
    await waitFor(async () => (await sql`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`)[0]!.n === 1, {
      what: "user 1's submit to wait for the advisory lock",
    })
    release()
    await holder
    expect((await same).userId).toBe(1)
    expect((await pendingOf('t')).map((r) => r.user_id)).toEqual([1, 2])
  })

  test('a successor insert that meets a pending row of its (user, tag) skips; another user\'s does not', async () => {
    const pending = await app.workerManager.submitJob({ type: 'noop', userId: 1, tag: 'cron-x', due: later() })
    const row = validateJobInput(app.registry, { type: 'noop', userId: 1, tag: 'cron-x' })
    const inserted = await app.db.transaction(async (tx) => {
      await lockTags(tx, [row, { ...row, userId: 2 }])
      return insertJobs(tx, [row, { ...row, userId: 2 }], { onTagConflict: 'skip' })
    })
    expect(inserted.map((j) => j.userId)).toEqual([2])
    expect((await pendingOf('cron-x')).map((r) => [r.user_id, r.id])).toEqual([
      [1, pending.id],
      [2, inserted[0]!.id],
    ])
  })
})

describe('seeding the built-in schedules', () => {
  test('inserts one row (user 0, tag system:<type>, its type), keeps it, moves it to a new schedule', async () => {
    const first = await seedCronJob(app.db, { type: 'removeOldWorkerJobs', cronSchedule: '0 2 * * *' })
    expect(first.action).toBe('inserted')
    const [row] = await sql`SELECT id::int, user_id, type, tag, cron_schedule, max_attempts, remove_delay, data FROM worker_jobs`
    expect(row).toEqual({
      id: first.id!,
      user_id: 0,
      type: 'removeOldWorkerJobs',
      tag: 'system:removeOldWorkerJobs',
      cron_schedule: '0 2 * * *',
      max_attempts: 25,
      remove_delay: 7 * 24 * 3600,
      data: {},
    })
    expect(await seedCronJob(app.db, { type: 'removeOldWorkerJobs', cronSchedule: '0 2 * * *' })).toEqual({ action: 'kept', id: first.id! })
    expect(await seedCronJob(app.db, { type: 'removeOldWorkerJobs', cronSchedule: '0 3 * * *' })).toEqual({ action: 'rescheduled', id: first.id! })
    expect(await pendingOf('system:removeOldWorkerJobs')).toEqual([{ id: first.id!, user_id: 0, type: 'removeOldWorkerJobs', cron_schedule: '0 3 * * *' }])
  })

  test('a foreign-typed pending row holding the tag is cancelled and the real one inserted', async () => {
    // Only old data or psql can do this: submitJob refuses the prefix.
    const [foreign] = await sql`
      INSERT INTO worker_jobs (type, user_id, tag, cron_schedule, due) VALUES ('noop', 0, 'system:watchChain', '*/30 * * * * *', now() + interval '1 hour')
      RETURNING id::int`
    // A user's own row with the same tag text is that user's business, and stays.
    const [usersOwn] = await sql`INSERT INTO worker_jobs (type, user_id, tag, due) VALUES ('noop', 7, 'system:watchChain', now() + interval '1 hour') RETURNING id::int`
    const res = await seedCronJob(app.db, { type: 'watchChain', cronSchedule: '*/30 * * * * *' })
    expect(res).toEqual({ action: 'inserted', id: expect.any(Number), cancelledJobId: foreign!.id })
    const [cancelled] = await sql`SELECT finished, success, result, remove_at FROM worker_jobs WHERE id = ${foreign!.id}`
    expect(cancelled!.finished).not.toBeNull()
    expect(cancelled!.remove_at).not.toBeNull()
    expect(cancelled!.success).toBe(false)
    expect(cancelled!.result).toEqual({ error: 'cancelled: tag reserved for the built-in watchChain schedule' })
    expect(await pendingOf('system:watchChain')).toEqual([
      { id: (res as { id: number }).id, user_id: 0, type: 'watchChain', cron_schedule: '*/30 * * * * *' },
      { id: usersOwn!.id, user_id: 7, type: 'noop', cron_schedule: null },
    ])
  })

  test('three concurrent seeds give exactly one row, also when a foreign row held the tag', async () => {
    await sql`INSERT INTO worker_jobs (type, user_id, tag, due) VALUES ('noop', 0, 'system:watchChain', now() + interval '1 hour')`
    const results = await Promise.all(
      Array.from({ length: 3 }, () => seedCronJob(app.db, { type: 'watchChain', cronSchedule: '*/30 * * * * *' })),
    )
    expect(results.map((r) => r.action).sort()).toEqual(['inserted', 'kept', 'kept'])
    const pending = await pendingOf('system:watchChain')
    expect(pending).toHaveLength(1)
    expect(pending[0]!.type).toBe('watchChain')
    expect((await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE type = 'watchChain'`)[0]!.n).toBe(1)
  })

  test('submitBuiltInJob: user 0, tag system:<type>, replacing the pending one; data is validated', async () => {
    const opts = { type: 'deployMulticall3', data: {}, autoRescheduleOnFailure: true, autoRescheduleOnFailureDelay: 60, maxAttempts: 5 }
    const first = await submitBuiltInJob(app.db, app.registry, opts)
    expect(first).toMatchObject({ userId: 0, tag: 'system:deployMulticall3', type: 'deployMulticall3', maxAttempts: 5 })
    const second = await submitBuiltInJob(app.db, app.registry, opts)
    expect((await pendingOf('system:deployMulticall3')).map((r) => r.id)).toEqual([second.id])
    const [old] = await sql`SELECT result FROM worker_jobs WHERE id = ${first.id}`
    expect(old!.result).toEqual({ error: `cancelled: replaced by job ${second.id}` })
    const err = await inputError(submitBuiltInJob(app.db, app.registry, { type: 'deployMulticall3', data: { forceRedeploy: 'yes' } }))
    expect(err.field).toBe('data.forceRedeploy')
  })
})
