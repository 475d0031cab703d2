import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import postgres from 'postgres'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type ServerProcess, startServerProcess, TEST_ENV } from '../helpers/server'
import { waitFor } from '../helpers/wait'
import { gql } from './client'

let db: TestDatabase
let server: ServerProcess
let sql: postgres.Sql

beforeAll(
  async () => {
    db = await createTestDatabase('gql')
    // No built-in cron rows: every row in the table is one these tests submitted, so counts are exact.
    server = await startServerProcess({
      DATABASE_URL: db.url,
      WORKER_COUNT: '1',
      CRON_REMOVE_OLD_WORKER_JOBS: 'off',
      WORKER_SHUTDOWN_TIMEOUT_MS: '1000',
    })
    sql = postgres(db.url, { max: 2, onnotice: () => {} })
  },
  { timeout: 30_000 },
)

afterAll(
  async () => {
    await server?.stop()
    await sql?.end()
    await db?.drop()
  },
  { timeout: 30_000 },
)

const JOB_FIELDS = `id type userId data due started finished removeAt success result cronSchedule autoRescheduleOnFailure
  autoRescheduleOnFailureDelay removeDelay persistent tag attempt maxAttempts rescheduledFromJob lockedBy leaseExpiresAt
  createdAt updatedAt status`

const SUBMIT = `mutation ($input: SubmitJobInput!) { submitJob(input: $input) { ${JOB_FIELDS} } }`
const JOB = `query ($id: ID!) { job(id: $id) { ${JOB_FIELDS} } }`
const JOBS = `query ($type: String, $status: JobStatus, $limit: Int) { jobs(filter: { type: $type, status: $status }, limit: $limit) { items { id type status success } total } }`

const rowCount = async () => (await sql`SELECT count(*)::int AS n FROM worker_jobs`)[0]!.n as number
const isIso = (v: unknown) => typeof v === 'string' && new Date(v).toISOString() === v

async function submit(input: Record<string, unknown>) {
  const res = await gql(server.url, SUBMIT, { input })
  expect(res.errors).toBeUndefined()
  return res.data.submitJob
}

async function jobStatus(id: string): Promise<string | undefined> {
  return (await gql(server.url, JOB, { id })).data?.job?.status
}

describe('submitJob', () => {
  test('creates a row with every option, and a worker runs it to success', async () => {
    const job = await submit({
      type: 'noop',
      userId: 7,
      data: { hello: 'world', n: [1, 2] },
      removeDelay: 3600,
      persistent: true,
      tag: 'gql-noop',
      maxAttempts: 3,
      autoRescheduleOnFailure: true,
      autoRescheduleOnFailureDelay: 5,
    })
    expect(job.id).toMatch(/^[1-9]\d*$/)
    expect(job).toMatchObject({
      type: 'noop',
      userId: 7,
      data: { hello: 'world', n: [1, 2] },
      removeDelay: 3600,
      persistent: true,
      tag: 'gql-noop',
      maxAttempts: 3,
      attempt: 1,
      autoRescheduleOnFailure: true,
      autoRescheduleOnFailureDelay: 5,
      cronSchedule: null,
    })
    for (const f of ['due', 'createdAt', 'updatedAt']) expect(isIso(job[f])).toBe(true)

    const [row] = await sql`SELECT user_id, data, remove_delay, persistent, tag FROM worker_jobs WHERE id = ${job.id}`
    expect(row).toEqual({ user_id: 7, data: { hello: 'world', n: [1, 2] }, remove_delay: 3600, persistent: true, tag: 'gql-noop' })

    const done = await waitFor(
      async () => {
        const j = (await gql(server.url, JOB, { id: job.id })).data?.job
        return j?.success === true ? j : null
      },
      { what: `job ${job.id} to succeed` },
    )
    expect(done.status).toBe('SUCCEEDED')
    expect(isIso(done.started)).toBe(true)
    expect(isIso(done.finished)).toBe(true)
    // removeAt = finished + removeDelay (seconds)
    expect(new Date(done.removeAt).getTime() - new Date(done.finished).getTime()).toBe(3600_000)
  })

  test('accepts a due time and a cron schedule, and returns them as ISO strings', async () => {
    const due = new Date(Date.now() + 3600_000).toISOString()
    const job = await submit({ type: 'noop', due, cronSchedule: '0 3 * * *' })
    expect(job.due).toBe(due)
    expect(job.cronSchedule).toBe('0 3 * * *')
    expect(job.status).toBe('PENDING')
    expect(job.started).toBeNull()
  })

  test('submitJobs inserts a batch', async () => {
    const res = await gql(server.url, `mutation ($jobs: [SubmitJobInput!]!) { submitJobs(jobs: $jobs) { id type } }`, {
      jobs: [{ type: 'noop' }, { type: 'sleep', data: { ms: 1 } }],
    })
    expect(res.errors).toBeUndefined()
    expect(res.data.submitJobs.map((j: any) => j.type)).toEqual(['noop', 'sleep'])
    const ids = res.data.submitJobs.map((j: any) => Number(j.id))
    expect((await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE id IN ${sql(ids)}`)[0]!.n).toBe(2)
  })
})

describe('bad input', () => {
  const cases: { name: string; input: Record<string, unknown>; field: string }[] = [
    { name: 'unknown type', input: { type: 'noSuchJob' }, field: 'type' },
    { name: 'bad data field', input: { type: 'deployMulticall3', data: { forceRedeploy: 'yes' } }, field: 'data.forceRedeploy' },
    { name: 'data of the wrong shape', input: { type: 'sleep', data: { ms: -1 } }, field: 'data.ms' },
    { name: 'bad cron string', input: { type: 'noop', cronSchedule: 'every tuesday' }, field: 'cronSchedule' },
    { name: 'negative removeDelay', input: { type: 'noop', removeDelay: -1 }, field: 'removeDelay' },
    { name: 'negative retry delay', input: { type: 'noop', autoRescheduleOnFailureDelay: -5 }, field: 'autoRescheduleOnFailureDelay' },
    { name: 'negative userId', input: { type: 'noop', userId: -1 }, field: 'userId' },
    { name: 'maxAttempts 0', input: { type: 'noop', maxAttempts: 0 }, field: 'maxAttempts' },
    { name: 'due that is not a date', input: { type: 'noop', due: 'tomorrow' }, field: 'due' },
    { name: 'due without a time zone', input: { type: 'noop', due: '2030-01-01T00:00:00' }, field: 'due' },
    { name: 'due on 31 February (not rolled over)', input: { type: 'noop', due: '2030-02-31T00:00:00Z' }, field: 'due' },
    { name: 'due in year 0000 (Postgres cannot store it)', input: { type: 'noop', due: '0000-01-01T00:00:00Z' }, field: 'due' },
    { name: 'a NUL in data (jsonb cannot store it)', input: { type: 'noop', data: { s: 'a\u0000b' } }, field: 'data.s' },
    { name: 'a lone surrogate in a tag', input: { type: 'noop', tag: 'x\ud800' }, field: 'tag' },
    { name: 'a reserved system: tag', input: { type: 'watchChain', userId: 0, tag: 'system:watchChain' }, field: 'tag' },
  ]

  test.each(cases)('$name: an error naming $field, and no row', async ({ input, field }) => {
    const before = await rowCount()
    const res = await gql(server.url, SUBMIT, { input })
    expect(res.status).toBe(200)
    expect(res.data).toBeNull()
    expect(res.errors).toHaveLength(1)
    const [err] = res.errors!
    expect(err!.message.startsWith(`Invalid job input: ${field}: `)).toBe(true)
    expect(err!.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field })
    expect(err!.path).toEqual(['submitJob'])
    expect(await rowCount()).toBe(before)
  })

  test('an inline literal is validated the same way', async () => {
    const before = await rowCount()
    const res = await gql(server.url, `mutation { submitJob(input: { type: "sleep", data: { ms: "long" } }) { id } }`)
    expect(res.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'data.ms' })
    expect(res.errors?.[0]?.message).toStartWith('Invalid job input: data.ms: ')
    expect(await rowCount()).toBe(before)
  })

  test('one bad job in a batch names jobs[i] and writes none of the batch', async () => {
    const before = await rowCount()
    const res = await gql(server.url, `mutation ($jobs: [SubmitJobInput!]!) { submitJobs(jobs: $jobs) { id } }`, {
      jobs: [{ type: 'noop' }, { type: 'noop', removeDelay: -10 }],
    })
    expect(res.data).toBeNull()
    expect(res.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'jobs[1].removeDelay' })
    expect(res.errors?.[0]?.message).toStartWith('Invalid job input: jobs[1].removeDelay: ')
    expect(await rowCount()).toBe(before)
  })

  test('a filter Postgres could not store is named, before any SQL runs', async () => {
    const res = await gql(server.url, JOBS, { type: 'a\u0000b' })
    expect(res.data).toBeNull()
    expect(res.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'filter.type' })
  })

  test('the server still answers afterwards', async () => {
    expect(server.proc.exitCode).toBeNull()
    expect((await fetch(`${server.url}/health`)).status).toBe(200)
    const res = await gql(server.url, JOBS, { limit: 1 })
    expect(res.errors).toBeUndefined()
    expect(res.data.jobs.items).toHaveLength(1)
    const job = await submit({ type: 'noop' })
    await waitFor(async () => (await jobStatus(job.id)) === 'SUCCEEDED', { what: 'a job submitted after the errors to succeed' })
  })
})

describe('queries', () => {
  test('jobs filters by status (checked against the table) and by type, newest first', async () => {
    const ok = await submit({ type: 'noop' })
    const failed = await submit({ type: 'fail', data: { message: 'on purpose' } })
    const running = await submit({ type: 'sleep', data: { ms: 60_000 } })
    const pending = await submit({ type: 'noop', due: new Date(Date.now() + 3600_000).toISOString() })
    const expected: Record<string, string> = { SUCCEEDED: ok.id, FAILED: failed.id, RUNNING: running.id, PENDING: pending.id }
    for (const [status, id] of Object.entries(expected)) await waitFor(async () => (await jobStatus(id)) === status, { what: `job ${id} to be ${status}` })

    const where: Record<string, string> = {
      PENDING: 'started IS NULL AND finished IS NULL',
      RUNNING: 'started IS NOT NULL AND finished IS NULL',
      SUCCEEDED: 'finished IS NOT NULL AND success IS TRUE AND cancelled_at IS NULL',
      FAILED: 'finished IS NOT NULL AND success IS NOT TRUE AND cancelled_at IS NULL',
    }
    for (const status of Object.keys(expected)) {
      const res = await gql(server.url, JOBS, { status, limit: 100 })
      expect(res.errors).toBeUndefined()
      const jobs: any[] = res.data.jobs.items
      expect(res.data.jobs.total).toBe(jobs.length)
      expect(jobs.map((j) => j.status)).toEqual(jobs.map(() => status))
      const ids = jobs.map((j) => j.id)
      expect(ids).toContain(expected[status]!)
      for (const [other, id] of Object.entries(expected)) if (other !== status) expect(ids).not.toContain(id)
      // The fixed WHERE texts below contain no values.
      const [{ n }] = (await sql.unsafe(`SELECT count(*)::int AS n FROM worker_jobs WHERE ${where[status]}`)) as any
      expect(jobs).toHaveLength(n)
    }

    const byType = (await gql(server.url, JOBS, { type: 'fail', limit: 100 })).data.jobs.items as any[]
    expect(byType.map((j) => j.id)).toEqual([failed.id])
    const both = (await gql(server.url, JOBS, { type: 'noop', status: 'PENDING' })).data.jobs.items as any[]
    expect(both.map((j) => j.id)).toContain(pending.id)
    expect(both.every((j) => j.type === 'noop' && j.status === 'PENDING')).toBe(true)

    const page = (await gql(server.url, JOBS, { limit: 100 })).data.jobs
    const all = page.items as any[]
    expect(all).toHaveLength(await rowCount())
    expect(page.total).toBe(all.length)
    const ids = all.map((j) => Number(j.id))
    expect(ids).toEqual([...ids].sort((a, b) => b - a))
    expect(ids[0]).toBe(Number(pending.id))
  })

  test('limit defaults to 50, applies, and is validated', async () => {
    const two = await gql(server.url, JOBS, { limit: 2 })
    expect(two.data.jobs.items).toHaveLength(2)
    await sql`INSERT INTO worker_jobs (type, due) SELECT 'noop', now() + interval '1 day' FROM generate_series(1, 60)`
    const byDefault = await gql(server.url, `{ jobs { items { id } total } }`)
    expect(byDefault.data.jobs.items).toHaveLength(50)
    expect(byDefault.data.jobs.total).toBe(await rowCount())
    for (const limit of [0, -1, 101]) {
      const res = await gql(server.url, JOBS, { limit })
      expect(res.data).toBeNull()
      expect(res.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'limit' })
    }
    expect((await gql(server.url, JOBS, { limit: 100 })).data.jobs.items.length).toBe(Math.min(100, await rowCount()))
  })

  test('job returns null for a missing id and a named error for a malformed one', async () => {
    const missing = await gql(server.url, JOB, { id: '987654321' })
    expect(missing.errors).toBeUndefined()
    expect(missing.data).toEqual({ job: null })
    const bad = await gql(server.url, JOB, { id: 'abc' })
    expect(bad.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'id' })
  })

  test('GET /graphql runs a query too', async () => {
    const query = encodeURIComponent('{ jobs(limit: 1) { items { id } } }')
    const res = await fetch(`${server.url}/graphql?query=${query}`, {
      headers: { accept: 'application/json', authorization: `Bearer ${TEST_ENV.ADMIN_API_TOKEN}` },
    })
    expect(res.status).toBe(200)
    const body = (await res.json()) as any
    expect(body.errors).toBeUndefined()
    expect(body.data.jobs.items).toHaveLength(1)
  })
})
