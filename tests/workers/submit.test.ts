import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'bun:test'
import type postgres from 'postgres'
import type { ServerApp } from '../../src/server/serverApp'
import { JobInputError } from '../../src/server/workers/queue/submit'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { sqlClient, testServerApp } from '../helpers/engine'

let db: TestDatabase
let app: ServerApp
let sql: postgres.Sql

beforeAll(async () => {
  db = await createTestDatabase('submit')
  app = await testServerApp(db.url)
  sql = sqlClient(db.url)
})
afterAll(async () => {
  await app.dbHandle.close()
  await sql.end()
  await db.drop()
})
beforeEach(async () => {
  await sql`TRUNCATE worker_jobs`
})

const count = async () => (await sql`SELECT count(*)::int AS n FROM worker_jobs`)[0]!.n as number

async function rejects(input: unknown, field: string) {
  let err: unknown
  try {
    await app.workerManager.submitJob(input as never)
  } catch (e) {
    err = e
  }
  expect(err).toBeInstanceOf(JobInputError)
  expect((err as JobInputError).field).toBe(field)
  expect((err as Error).message).toContain(field)
}

describe('submitJob', () => {
  test("the seed's own call works exactly as written", async () => {
    const job = await app.workerManager.submitJob({
      type: 'deployMulticall3',
      userId: 1,
      data: { forceRedeploy: false },
      due: new Date(),
      persistent: false,
      autoRescheduleOnFailure: true,
    })
    expect(job.id).toBeGreaterThan(0)
    expect(job.type).toBe('deployMulticall3')
    expect(job.userId).toBe(1)
    expect(job.data).toEqual({ forceRedeploy: false })
    expect(job.autoRescheduleOnFailure).toBe(true)
    expect(job.removeDelay).toBe(7 * 24 * 3600)
    expect(job.attempt).toBe(1)
    expect(job.started).toBeNull()
    expect(await count()).toBe(1)
  })

  test.each([
    [{ type: 'noSuchType', userId: 1 }, 'type'],
    [{ type: 'deployMulticall3', userId: 1, data: { forceRedeploy: 'yes' } }, 'data.forceRedeploy'],
    [{ type: 'deployMulticall3', userId: 1, data: { surprise: 1 } }, 'data'],
    [{ type: 'noop', userId: 1, cronSchedule: 'every day' }, 'cronSchedule'],
    [{ type: 'noop', userId: 1, cronSchedule: '* * *' }, 'cronSchedule'],
    [{ type: 'noop', userId: 1, removeDelay: -1 }, 'removeDelay'],
    [{ type: 'noop', userId: 1, autoRescheduleOnFailureDelay: -5 }, 'autoRescheduleOnFailureDelay'],
    [{ type: 'noop', userId: -1 }, 'userId'],
    [{ type: 'noop', userId: 1, due: 'not a date' }, 'due'],
    [{ type: 'noop', userId: 1, maxAttempts: 0 }, 'maxAttempts'],
    [{ type: 'noop', userId: 1, bogus: true }, 'input'],
    [{ type: 'sleep', userId: 1, data: {} }, 'data.ms'],
    // Impossible dates are refused, not rolled over into the next month.
    [{ type: 'noop', due: '2030-02-31' }, 'due'],
    [{ type: 'noop', due: '2030-02-31T00:00:00Z' }, 'due'],
    [{ type: 'noop', due: '2030-01-01T00:00:00' }, 'due'],
    [{ type: 'noop', due: new Date(Number.NaN) }, 'due'],
    // What Postgres cannot store is refused before any SQL runs.
    [{ type: 'noop', due: '0000-01-01T00:00:00Z' }, 'due'],
    [{ type: 'noop', due: new Date('+100000-01-01T00:00:00Z') }, 'due'],
    [{ type: 'noop', userId: 2 ** 31 }, 'userId'],
    [{ type: 'noop', maxAttempts: 2 ** 31 }, 'maxAttempts'],
    [{ type: 'noop', autoRescheduleOnFailureDelay: 2 ** 31 }, 'autoRescheduleOnFailureDelay'],
    [{ type: 'noop', data: { s: 'a\u0000b' } }, 'data.s'],
    [{ type: 'noop', data: { deep: [{ x: '\udfff' }] } }, 'data.deep[0].x'],
    [{ type: 'noop', tag: 'a\u0000' }, 'tag'],
    [{ type: 'noop', tag: '\ud800' }, 'tag'],
    // Built-in schedules own the system: tags.
    [{ type: 'watchChain', userId: 0, tag: 'system:watchChain' }, 'tag'],
  ])('rejects %p naming %s, and writes nothing', async (input, field) => {
    await rejects(input, field)
    expect(await count()).toBe(0)
  })

  test('due: a Date, epoch ms, an ISO date-time with any zone, or a date (UTC), within 1970..9999', async () => {
    const cases: [unknown, string][] = [
      [new Date('2030-01-01T00:00:00Z'), '2030-01-01T00:00:00.000Z'],
      [Date.UTC(2030, 5, 1), '2030-06-01T00:00:00.000Z'],
      ['2030-06-15T10:20:30.123456+02:00', '2030-06-15T08:20:30.123Z'],
      ['2028-02-29', '2028-02-29T00:00:00.000Z'],
      ['1970-01-01T00:00:00Z', '1970-01-01T00:00:00.000Z'],
      ['9999-12-31T23:59:59Z', '9999-12-31T23:59:59.000Z'],
    ]
    for (const [due, iso] of cases) {
      const job = await app.workerManager.submitJob({ type: 'noop', due })
      expect(job.due.toISOString()).toBe(iso)
      const [row] = await sql`SELECT due FROM worker_jobs WHERE id = ${job.id}`
      expect(new Date(row!.due).toISOString()).toBe(iso)
    }
    let err: unknown
    try {
      await app.workerManager.submitJob({ type: 'noop', due: '1969-12-31T23:59:59Z' })
    } catch (e) {
      err = e
    }
    expect((err as Error).message).toBe('Invalid job input: due: must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z')
  })

  test('submitJobs validates everything before writing anything', async () => {
    let err: unknown
    try {
      await app.workerManager.submitJobs([{ type: 'noop' }, { type: 'noop' }, { type: 'sleep', data: { ms: -1 } }])
    } catch (e) {
      err = e
    }
    expect((err as JobInputError).field).toBe('jobs[2].data.ms')
    expect(await count()).toBe(0)
  })

  test("a rolled-back caller's transaction leaves no job behind; a committed one keeps it", async () => {
    await expect(
      app.db.transaction(async (tx) => {
        await app.workerManager.submitJob({ type: 'noop' }, { tx })
        await app.workerManager.submitJobs([{ type: 'noop' }, { type: 'noop', tag: 'x' }], { tx })
        throw new Error('resolver failed')
      }),
    ).rejects.toThrow('resolver failed')
    expect(await count()).toBe(0)
    await app.db.transaction(async (tx) => {
      await app.workerManager.submitJob({ type: 'noop', tag: 'y' }, { tx })
    })
    expect(await count()).toBe(1)
  })

  test('a tag replaces its pending job, naming the replacement', async () => {
    const first = await app.workerManager.submitJob({ type: 'noop', tag: 'daily-report', due: new Date(Date.now() + 60_000) })
    const second = await app.workerManager.submitJob({ type: 'noop', tag: 'daily-report', due: new Date(Date.now() + 60_000) })
    const rows = await sql`SELECT id, finished, success, result FROM worker_jobs ORDER BY id`
    expect(rows).toHaveLength(2)
    expect(rows[0]!.id).toBe(String(first.id))
    expect(rows[0]!.finished).not.toBeNull()
    expect(rows[0]!.success).toBe(false)
    expect(rows[0]!.result).toEqual({ error: `cancelled: replaced by job ${second.id}` })
    expect(rows[1]!.finished).toBeNull()
    const [pending] = await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE tag = 'daily-report' AND started IS NULL AND finished IS NULL`
    expect(pending!.n).toBe(1)
  })

  test('concurrent submits of one tag leave exactly one pending row', async () => {
    await Promise.all(Array.from({ length: 10 }, () => app.workerManager.submitJob({ type: 'noop', tag: 'race' })))
    const [pending] = await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE tag = 'race' AND started IS NULL AND finished IS NULL`
    expect(pending!.n).toBe(1)
    expect(await count()).toBe(10)
  })

  test('a cron job without due first runs at its next cron time', async () => {
    const before = Date.now()
    const job = await app.workerManager.submitJob({ type: 'noop', cronSchedule: '0 0 1 1 *' })
    expect(job.cronSchedule).toBe('0 0 1 1 *')
    expect(job.due.getTime()).toBeGreaterThan(before)
    expect(job.due.getUTCMonth()).toBe(0)
    expect(job.due.getUTCDate()).toBe(1)
  })

  test('submitJobs inserts many rows and returns them in order', async () => {
    const rows = await app.workerManager.submitJobs(Array.from({ length: 25_000 }, (_, i) => ({ type: 'noop', userId: i % 5, data: { i } })))
    expect(rows).toHaveLength(25_000)
    expect((rows[24_999]!.data as { i: number }).i).toBe(24_999)
    expect(await count()).toBe(25_000)
  })

  test('the bulk (COPY) path keeps data exactly, ids and options included', async () => {
    const tricky = { s: 'tab\there\nnew line \\ backslash "quote" \r ünï €', n: [1, 2.5, null], nested: { a: { b: true } } }
    const inputs = Array.from({ length: 600 }, (_, i) => ({
      type: 'noop',
      userId: i,
      data: { ...tricky, i },
      due: new Date(Date.UTC(2030, 0, 1, 0, 0, i % 60)),
      persistent: i % 2 === 0,
      removeDelay: 60 + i,
      autoRescheduleOnFailure: true,
      autoRescheduleOnFailureDelay: 5,
      maxAttempts: 3,
      cronSchedule: i === 7 ? '0 0 * * *' : undefined,
    }))
    const returned = await app.workerManager.submitJobs(inputs)
    const rows = await sql`SELECT * FROM worker_jobs ORDER BY id`
    expect(rows).toHaveLength(600)
    expect(returned.map((r) => r.id)).toEqual(rows.map((r) => Number(r.id)))
    rows.forEach((r, i) => {
      expect(r.data).toEqual({ ...tricky, i })
      expect(r.user_id).toBe(i)
      expect(new Date(r.due).toISOString()).toBe(inputs[i]!.due.toISOString())
      expect(r.persistent).toBe(i % 2 === 0)
      expect(r.remove_delay).toBe(60 + i)
      expect(r.max_attempts).toBe(3)
      expect(r.attempt).toBe(1)
      expect(r.cron_schedule).toBe(i === 7 ? '0 0 * * *' : null)
      expect(returned[i]!.data).toEqual({ ...tricky, i })
    })
  })

  test('a bad input deep inside a large (streamed COPY) submission writes nothing and names its field', async () => {
    const inputs: Record<string, unknown>[] = Array.from({ length: 5000 }, () => ({ type: 'sleep', data: { ms: 1 } }))
    inputs[4321] = { type: 'sleep', data: { ms: 'soon' } }
    let err: unknown
    try {
      await app.workerManager.submitJobs(inputs as never)
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(JobInputError)
    expect((err as JobInputError).field).toBe('jobs[4321].data.ms')
    expect(await count()).toBe(0)
    // The connection is usable afterwards, and a good submission of the same size goes in whole.
    inputs[4321] = { type: 'sleep', data: { ms: 2 } }
    const rows = await app.workerManager.submitJobs(inputs as never)
    expect(rows).toHaveLength(5000)
    expect(await count()).toBe(5000)
  })
})
