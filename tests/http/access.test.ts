import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { newWallet, signIn } from '../helpers/auth'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type ServerProcess, startServerProcess } from '../helpers/server'
import { waitFor } from '../helpers/wait'
import { gql } from './client'

/** Who may do what, over real HTTP against the real server, as signed-in users and admins. */

let db: TestDatabase
let server: ServerProcess
let sql: postgres.Sql
let alice: { token: string; userId: number }
let bob: { token: string; userId: number }
let admin: { token: string; userId: number }
const dir = mkdtempSync(join(tmpdir(), 'access-'))
const abortsFile = join(dir, 'aborts.jsonl')
const adminWallet = newWallet()

beforeAll(
  async () => {
    db = await createTestDatabase('access')
    server = await startServerProcess({
      DATABASE_URL: db.url,
      WORKER_COUNT: '1',
      CRON_REMOVE_OLD_WORKER_JOBS: 'off',
      ADMIN_WALLETS: adminWallet.address,
      TEST_ABORTS_FILE: abortsFile,
      SUBMIT_BATCH_MAX: '5',
      MAX_PENDING_JOBS_PER_USER: '8',
      SUBMIT_RATE_PER_MINUTE: '40',
    })
    sql = postgres(db.url, { max: 2, onnotice: () => {} })
    await sql`CREATE TABLE test_job_runs (job_id bigint, pid int, started_at timestamptz, ended_at timestamptz)`
    await sql`CREATE TABLE test_job_aborts (job_id bigint, attempt int, pid int, reason text)`
    ;[alice, bob, admin] = await Promise.all([signIn(server.url, newWallet()), signIn(server.url, newWallet()), signIn(server.url, adminWallet)])
  },
  { timeout: 30_000 },
)

afterAll(async () => {
  await server?.stop()
  await sql?.end()
  await db?.drop()
  rmSync(dir, { recursive: true, force: true })
})

const as = (who: { token: string } | null) => ({ token: who ? who.token : null })
const SUBMIT = `mutation ($input: SubmitJobInput!) { submitJob(input: $input) { id userId status } }`
const JOB = `query ($id: ID!) { job(id: $id) { id userId status result lockedBy attempt rescheduledFromJob cancelledAt } }`
const code = (res: { errors?: { extensions?: Record<string, any> }[] }) => res.errors?.[0]?.extensions?.code
const field = (res: { errors?: { extensions?: Record<string, any> }[] }) => res.errors?.[0]?.extensions?.field

async function submitAs(who: { token: string }, input: Record<string, unknown>) {
  const res = await gql(server.url, SUBMIT, { input }, as(who))
  expect(res.errors).toBeUndefined()
  return res.data.submitJob as { id: string; userId: number; status: string }
}

const statusOf = async (id: string) => (await sql`SELECT finished, success, cancelled_at FROM worker_jobs WHERE id = ${id}`)[0]

describe('submitting', () => {
  test("a user's job is theirs: it runs, job(id) shows SUCCEEDED, and another user can't see it", async () => {
    const job = await submitAs(alice, { type: 'noop', data: { hi: 1 } })
    expect(job.userId).toBe(alice.userId)
    await waitFor(async () => (await gql(server.url, JOB, { id: job.id }, as(alice))).data.job.status === 'SUCCEEDED', { timeoutMs: 10_000 })
    expect((await gql(server.url, JOB, { id: job.id }, as(bob))).data.job).toBeNull()
    const bobsList = await gql(server.url, `{ jobs { items { id } total } }`, undefined, as(bob))
    expect(bobsList.data.jobs.items.map((j: any) => j.id)).not.toContain(job.id)
    // Admins see it.
    expect((await gql(server.url, JOB, { id: job.id }, as(admin))).data.job.userId).toBe(alice.userId)
  })

  test('a user may not submit for another user, nor an admin-only type; nothing is written', async () => {
    const before = (await sql`SELECT count(*)::int AS n FROM worker_jobs`)[0]!.n
    const forOther = await gql(server.url, SUBMIT, { input: { type: 'noop', userId: bob.userId } }, as(alice))
    expect([code(forOther), field(forOther)]).toEqual(['FORBIDDEN', 'userId'])
    for (const type of ['deployMulticall3', 'watchChain', 'removeOldWorkerJobs', 'hang']) {
      const res = await gql(server.url, SUBMIT, { input: { type, data: type === 'deployMulticall3' ? { forceRedeploy: true } : {} } }, as(alice))
      expect([code(res), field(res)]).toEqual(['FORBIDDEN', 'type'])
    }
    const inBatch = await gql(server.url, `mutation ($jobs: [SubmitJobInput!]!) { submitJobs(jobs: $jobs) { id } }`, { jobs: [{ type: 'noop' }, { type: 'deployMulticall3' }] }, as(alice))
    expect([code(inBatch), field(inBatch)]).toEqual(['FORBIDDEN', 'jobs[1].type'])
    expect((await sql`SELECT count(*)::int AS n FROM worker_jobs`)[0]!.n).toBe(before)
    // The same wallet's own userId is fine; an admin may submit for anyone and any type.
    expect((await submitAs(alice, { type: 'noop', userId: alice.userId })).userId).toBe(alice.userId)
    expect((await submitAs(admin, { type: 'noop', userId: bob.userId })).userId).toBe(bob.userId)
    const hang = await gql(server.url, SUBMIT, { input: { type: 'hang', due: '2999-01-01T00:00:00Z' } }, as(admin))
    expect(hang.errors).toBeUndefined()
  })

  test("a user's job data is limited to 256 KiB of JSON; an admin's is not", async () => {
    const big = { blob: 'x'.repeat(256 * 1024) }
    const res = await gql(server.url, SUBMIT, { input: { type: 'noop', data: big, due: '2999-01-01T00:00:00Z' } }, as(alice))
    expect([code(res), field(res)]).toEqual(['BAD_USER_INPUT', 'data'])
    expect(await sql`SELECT 1 FROM worker_jobs WHERE user_id = ${alice.userId} AND length(data::text) > 200000`).toHaveLength(0)
    expect((await gql(server.url, SUBMIT, { input: { type: 'noop', data: big, due: '2999-01-01T00:00:00Z' } }, as(admin))).errors).toBeUndefined()
  })

  test("a user's cron job may not run more than once a minute", async () => {
    const res = await gql(server.url, SUBMIT, { input: { type: 'noop', cronSchedule: '* * * * * *' } }, as(alice))
    expect([code(res), field(res)]).toEqual(['FORBIDDEN', 'cronSchedule'])
    const minutely = await submitAs(alice, { type: 'noop', cronSchedule: '*/5 * * * *' })
    expect(minutely.status).toBe('PENDING')
  })

  test('only admins may submit ahead of the default priority; the priority shows on the job', async () => {
    const dave = await signIn(server.url, newWallet())
    const later = { type: 'noop', due: '2999-01-01T00:00:00Z' }
    const ahead = await gql(server.url, SUBMIT, { input: { ...later, priority: -1 } }, as(dave))
    expect([code(ahead), field(ahead)]).toEqual(['FORBIDDEN', 'priority'])
    const outOfRange = await gql(server.url, SUBMIT, { input: { ...later, priority: 40_000 } }, as(admin))
    expect([code(outOfRange), field(outOfRange)]).toEqual(['BAD_USER_INPUT', 'priority'])
    const own = await submitAs(dave, { ...later, priority: 7 })
    const byAdmin = await submitAs(admin, { ...later, priority: -5 })
    const read = async (id: string, who: { token: string }) => (await gql(server.url, 'query ($id: ID!) { job(id: $id) { priority } }', { id }, as(who))).data.job.priority
    expect(await read(own.id, dave)).toBe(7)
    expect(await read(byAdmin.id, admin)).toBe(-5)
    // Nothing was written for the refusals.
    expect((await sql`SELECT priority FROM worker_jobs WHERE user_id = ${dave.userId}`).map((r) => r.priority)).toEqual([7])
  })

  test('batch size, rate and pending caps apply to users, with clear errors', async () => {
    const carol = await signIn(server.url, newWallet())
    const six = Array.from({ length: 6 }, () => ({ type: 'noop', due: '2999-01-01T00:00:00Z' }))
    const tooMany = await gql(server.url, `mutation ($jobs: [SubmitJobInput!]!) { submitJobs(jobs: $jobs) { id } }`, { jobs: six }, as(carol))
    expect([code(tooMany), field(tooMany)]).toEqual(['BAD_USER_INPUT', 'jobs'])
    // 8 pending allowed: 5 + 3 fit, the 9th does not.
    const batch = (n: number) => gql(server.url, `mutation ($jobs: [SubmitJobInput!]!) { submitJobs(jobs: $jobs) { id } }`, { jobs: six.slice(0, n) }, as(carol))
    expect((await batch(5)).errors).toBeUndefined()
    expect((await batch(3)).errors).toBeUndefined()
    const over = await batch(1)
    expect(code(over)).toBe('LIMIT_EXCEEDED')
    expect((await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE user_id = ${carol.userId}`)[0]!.n).toBe(8)
    // Admins are not capped.
    expect((await gql(server.url, `mutation ($jobs: [SubmitJobInput!]!) { submitJobs(jobs: $jobs) { id } }`, { jobs: [...six, ...six] }, as(admin))).errors).toBeUndefined()
  })

  test('aliases do not multiply the per-request limits: jobs submitted, rows listed', async () => {
    const gina = await signIn(server.url, newWallet())
    const three = `[{ type: "noop", due: "2999-01-01T00:00:00Z" }, { type: "noop", due: "2999-01-01T00:00:00Z" }]`
    const aliased = `mutation { a: submitJobs(jobs: ${three}) { id } b: submitJobs(jobs: ${three}) { id } c: submitJobs(jobs: ${three}) { id } }`
    const res = await gql(server.url, aliased, undefined, as(gina))
    // 5 per request: the first two batches (4 jobs) fit, the third would make 6.
    expect(res.errors?.map((e) => [e.extensions?.code, e.extensions?.field])).toEqual([['BAD_USER_INPUT', 'jobs']])
    expect((await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE user_id = ${gina.userId}`)[0]!.n).toBe(4)
    const lists = await gql(server.url, `{ a: jobs(limit: 60) { total } b: jobs(limit: 60) { total } }`, undefined, as(gina))
    expect(lists.errors?.map((e) => [e.extensions?.code, e.extensions?.field])).toEqual([['BAD_USER_INPUT', 'limit']])
    expect((await gql(server.url, `{ a: jobs(limit: 50) { total } b: myNotifications(limit: 50) { id } }`, undefined, as(gina))).errors).toBeUndefined()
  })

  test('concurrent submits cannot pass the pending cap together', async () => {
    const dave = await signIn(server.url, newWallet())
    const results = await Promise.all(
      Array.from({ length: 6 }, () =>
        gql(server.url, `mutation ($jobs: [SubmitJobInput!]!) { submitJobs(jobs: $jobs) { id } }`, { jobs: [{ type: 'noop', due: '2999-01-01T00:00:00Z' }, { type: 'noop', due: '2999-01-01T00:00:00Z' }] }, as(dave)),
      ),
    )
    expect(results.filter((r) => !r.errors)).toHaveLength(4)
    expect(results.filter((r) => code(r) === 'LIMIT_EXCEEDED')).toHaveLength(2)
    expect((await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE user_id = ${dave.userId}`)[0]!.n).toBe(8)
  })

  test('the submit rate limit refuses a burst past it, with a retry hint', async () => {
    const erin = await signIn(server.url, newWallet())
    // 40 jobs a minute: batches of 5 use the rate up by the 9th (the pending cap refuses some before that,
    // but a refused submit still spent its share of the rate: it was asked for).
    const codes: (string | undefined)[] = []
    let refused: any
    for (let i = 0; i < 12 && !refused; i++) {
      const jobs = Array.from({ length: 5 }, () => ({ type: 'noop', due: '2999-01-01T00:00:00Z' }))
      const res = await gql(server.url, `mutation ($jobs: [SubmitJobInput!]!) { submitJobs(jobs: $jobs) { id } }`, { jobs }, as(erin))
      codes.push(code(res))
      if (code(res) === 'RATE_LIMITED') refused = res.errors![0]
    }
    expect(codes).toEqual([undefined, ...Array(7).fill('LIMIT_EXCEEDED'), 'RATE_LIMITED'])
    expect(refused.extensions.retryAfterSeconds).toBeGreaterThan(0)
    expect(refused.message).toContain('40 jobs per minute')
  })
})

describe('cancel and rerun', () => {
  test('a running job is cancelled: its handler sees the signal abort and the row is CANCELLED', async () => {
    const job = await submitAs(alice, { type: 'watchful', data: { ms: 60_000 }, autoRescheduleOnFailure: true })
    await waitFor(async () => (await statusOf(job.id))?.finished === null && (await sql`SELECT started FROM worker_jobs WHERE id = ${job.id}`)[0]!.started !== null, { timeoutMs: 10_000 })
    // Bob may not cancel it; it is as if it did not exist.
    expect(code(await gql(server.url, `mutation ($id: ID!) { cancelJob(id: $id) { status } }`, { id: job.id }, as(bob)))).toBe('NOT_FOUND')
    const res = await gql(server.url, `mutation ($id: ID!) { cancelJob(id: $id) { status job { id } } }`, { id: job.id }, as(alice))
    expect(res.errors).toBeUndefined()
    await waitFor(async () => (await gql(server.url, JOB, { id: job.id }, as(alice))).data.job.status === 'CANCELLED', { timeoutMs: 10_000 })
    const aborts = readFileSync(abortsFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l))
    expect(aborts.find((a) => String(a.jobId) === job.id)?.reason).toMatch(/cancel/i)
    // No retry despite autoRescheduleOnFailure.
    expect(await sql`SELECT 1 FROM worker_jobs WHERE rescheduled_from_job = ${job.id}`).toHaveLength(0)
  })

  test('a pending job is cancelled at once and never runs; rerun submits it again as a new row', async () => {
    const job = await submitAs(alice, { type: 'noop', due: '2999-01-01T00:00:00Z' })
    const res = await gql(server.url, `mutation ($id: ID!) { cancelJob(id: $id) { status } }`, { id: job.id }, as(alice))
    expect(res.data.cancelJob.status).toBe('CANCELLED')
    const again = await gql(server.url, `mutation ($id: ID!) { cancelJob(id: $id) { status } }`, { id: job.id }, as(alice))
    expect(again.errors?.[0]).toBeDefined()
    expect(code(await gql(server.url, `mutation ($id: ID!) { rerunJob(id: $id) { id } }`, { id: job.id }, as(bob)))).toBe('NOT_FOUND')
    const rerun = await gql(server.url, `mutation ($id: ID!) { rerunJob(id: $id) { id rescheduledFromJob userId status } }`, { id: job.id }, as(alice))
    expect(rerun.errors).toBeUndefined()
    expect(rerun.data.rerunJob).toMatchObject({ rescheduledFromJob: job.id, userId: alice.userId })
    await waitFor(async () => (await gql(server.url, JOB, { id: rerun.data.rerunJob.id }, as(alice))).data.job.status === 'SUCCEEDED', { timeoutMs: 10_000 })
  })

  test("a user may not cancel or rerun an admin-only job an admin submitted for them", async () => {
    const res = await gql(server.url, SUBMIT, { input: { type: 'hang', userId: alice.userId, due: '2999-01-01T00:00:00Z' } }, as(admin))
    const id = res.data.submitJob.id
    const cancel = await gql(server.url, `mutation ($id: ID!) { cancelJob(id: $id) { status } }`, { id }, as(alice))
    expect([code(cancel), field(cancel)]).toEqual(['FORBIDDEN', 'id'])
    expect((await statusOf(id))!.cancelled_at).toBeNull()
    expect((await gql(server.url, `mutation ($id: ID!) { cancelJob(id: $id) { status } }`, { id }, as(admin))).data.cancelJob.status).toBe('CANCELLED')
    expect(code(await gql(server.url, `mutation ($id: ID!) { rerunJob(id: $id) { id } }`, { id }, as(alice)))).toBe('FORBIDDEN')
  })

  test('results shown to non-admins carry the error message, never a stack or a host', async () => {
    const job = await submitAs(alice, { type: 'fail', data: { message: 'boom' } })
    await waitFor(async () => (await gql(server.url, JOB, { id: job.id }, as(alice))).data.job.status === 'FAILED', { timeoutMs: 10_000 })
    const mine = (await gql(server.url, JOB, { id: job.id }, as(alice))).data.job
    expect(mine.result.error).toBe('boom')
    expect(mine.result.stack).toBeUndefined()
    expect(mine.lockedBy).toBeNull()
    const adminView = (await gql(server.url, JOB, { id: job.id }, as(admin))).data.job
    expect(adminView.result.stack).toContain('boom')
    expect(adminView.lockedBy).toContain('/')
  })
})

describe('lists, status and notifications', () => {
  test('jobs filters by type, status, tag and (admins) user, pages with limit/offset, and counts the total', async () => {
    const frank = await signIn(server.url, newWallet())
    for (let i = 0; i < 4; i++) await submitAs(frank, { type: 'noop', due: '2999-01-01T00:00:00Z', tag: i === 0 ? 'special' : undefined })
    const Q = `query ($f: JobFilter, $l: Int, $o: Int, $order: JobOrder) { jobs(filter: $f, limit: $l, offset: $o, order: $order) { items { id userId } total } }`
    const all = (await gql(server.url, Q, { f: { status: 'PENDING' }, l: 2 }, as(frank))).data.jobs
    expect(all.total).toBe(4)
    expect(all.items).toHaveLength(2)
    const next = (await gql(server.url, Q, { f: { status: 'PENDING' }, l: 2, o: 2 }, as(frank))).data.jobs
    expect(new Set([...all.items, ...next.items].map((j: any) => j.id)).size).toBe(4)
    const oldest = (await gql(server.url, Q, { l: 1, order: 'OLDEST_FIRST' }, as(frank))).data.jobs.items[0].id
    expect(Number(oldest)).toBeLessThan(Number(all.items[0].id))
    expect((await gql(server.url, Q, { f: { tag: 'special' } }, as(frank))).data.jobs.total).toBe(1)
    const other = await gql(server.url, Q, { f: { userId: alice.userId } }, as(frank))
    expect([code(other), field(other)]).toEqual(['FORBIDDEN', 'filter.userId'])
    expect((await gql(server.url, Q, { f: { userId: frank.userId } }, as(admin))).data.jobs.total).toBe(4)
    for (const [l, o, f] of [[0, 0, 'limit'], [101, 0, 'limit'], [10, -1, 'offset'], [10, 10_001, 'offset']] as const) {
      const res = await gql(server.url, Q, { l, o }, as(frank))
      expect([code(res), field(res)]).toEqual(['BAD_USER_INPUT', f])
    }
  })

  test('workerStatus is for admins: servers with their workers, counts by status and type, next cron runs', async () => {
    expect(code(await gql(server.url, `{ workerStatus { counts { count } } }`, undefined, as(alice)))).toBe('FORBIDDEN')
    await waitFor(async () => {
      const res = await gql(server.url, `{ workerStatus { servers { id live workers { alive healthy } } counts { type status count } crons { type cronSchedule nextRun } } }`, undefined, as(admin))
      const s = res.data?.workerStatus
      return s && s.servers.length === 1 && s.servers[0].workers.length === 1 && s.servers[0].workers[0].alive
    }, { timeoutMs: 15_000 })
    const s = (await gql(server.url, `{ workerStatus { servers { live } counts { type status count } crons { type cronSchedule } } }`, undefined, as(admin))).data.workerStatus
    expect(s.servers[0].live).toBe(true)
    const counted = await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE type = 'noop' AND finished IS NOT NULL AND success AND cancelled_at IS NULL`
    expect(s.counts.find((c: any) => c.type === 'noop' && c.status === 'SUCCEEDED')?.count).toBe(counted[0]!.n)
    expect(s.crons.some((c: any) => c.cronSchedule === '*/5 * * * *')).toBe(true)
  })

  test('notifications are per user: list, mark one read (only your own), mark all', async () => {
    await sql`INSERT INTO notifications (user_id, data) VALUES (${alice.userId}, ${sql.json({ n: 1 })}), (${alice.userId}, ${sql.json({ n: 2 })}), (${bob.userId}, ${sql.json({ n: 3 })})`
    const mine = (await gql(server.url, `{ myNotifications { id data read } }`, undefined, as(alice))).data.myNotifications
    expect(mine.map((n: any) => n.data.n).sort()).toEqual([1, 2])
    const bobs = (await gql(server.url, `{ myNotifications { id } }`, undefined, as(bob))).data.myNotifications
    const steal = await gql(server.url, `mutation ($id: ID!) { markNotificationRead(id: $id) { id } }`, { id: bobs[0].id }, as(alice))
    expect(code(steal)).toBe('NOT_FOUND')
    expect((await sql`SELECT read FROM notifications WHERE id = ${bobs[0].id}`)[0]!.read).toBe(false)
    expect((await gql(server.url, `mutation ($id: ID!) { markNotificationRead(id: $id) { read } }`, { id: mine[0].id }, as(alice))).data.markNotificationRead.read).toBe(true)
    expect((await gql(server.url, `mutation { markAllNotificationsRead }`, undefined, as(alice))).data.markAllNotificationsRead).toBe(1)
    expect((await sql`SELECT count(*)::int AS n FROM notifications WHERE read = false`)[0]!.n).toBe(1)
  })
})
