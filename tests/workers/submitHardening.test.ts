import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'bun:test'
import type postgres from 'postgres'
import type { RunningServer } from '../../src/server/boot'
import type { ServerApp } from '../../src/server/serverApp'
import { copyJobs } from '../../src/server/workers/queue/copyInsert'
import { insertJobs } from '../../src/server/workers/queue/insert'
import { findUnstorable, sanitizeForJsonb, toJson } from '../../src/server/workers/queue/rows'
import { databaseInputError, JobInputError, parseIsoDateTime, validateJobInput } from '../../src/server/workers/queue/submit'
import type { NewJobRow } from '../../src/server/workers/queue/successor'
import { gql } from '../http/client'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { sqlClient, startTestServer, testServerApp } from '../helpers/engine'

/**
 * The bulk path used to leak a connection per refused submission: Postgres refused a COPY line after the
 * data was sent, postgres.js never settled the stream (porsager/postgres#1173), and the request hung with
 * its connection idle in transaction (aborted). These tests submit what Postgres refuses, with and
 * without validation in front, and check the pool afterwards.
 */

/** The rejection of `p`; fails if `p` resolves, or is still pending at the deadline (the old code hung forever). */
async function rejection(p: Promise<unknown>, ms = 10_000): Promise<unknown> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const late = new Error(`still pending after ${ms} ms`)
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(late), ms)
  })
  try {
    await Promise.race([p, deadline])
  } catch (err) {
    if (err === late) throw err
    return err
  } finally {
    clearTimeout(timer)
  }
  throw new Error('expected a rejection, got a result')
}

/** A valid JavaScript Date that Postgres refuses (it has no year 0). */
const YEAR_ZERO = new Date('0000-01-01T00:00:00Z')

describe('pure helpers', () => {
  test('findUnstorable names the first NUL, lone surrogate or cycle, in values and keys, as toJson would write them', () => {
    expect(findUnstorable({ a: 1, b: ['x', { c: 'fine ü € 😀' }] }, 'data')).toBeNull()
    expect(findUnstorable({ a: 1, b: ['x', { c: 'a\u0000b' }] }, 'data')?.path).toBe('data.b[1].c')
    expect(findUnstorable({ list: ['ok', '\ud800'] }, 'jobs[3].data')).toEqual({
      path: 'jobs[3].data.list[1]',
      reason: 'contains a lone UTF-16 surrogate, which Postgres cannot store',
    })
    expect(findUnstorable({ ok: 1, 'k\u0000': 1 }, 'data')).toEqual({
      path: 'data["k\\u0000"]',
      reason: 'key contains a NUL character (\\u0000), which Postgres cannot store',
    })
    expect(findUnstorable({ '\udc00x': true }, 'data')?.path).toBe('data["\\udc00x"]')
    expect(findUnstorable('\u0000', 'data')?.path).toBe('data')
    // A valid surrogate pair is fine; a high surrogate at the very end is not.
    expect(findUnstorable(['😀', 'a\ud83d'])?.path).toBe('[1]')
    // What JSON.stringify drops is never written, so it cannot be refused.
    expect(findUnstorable({ gone: undefined, f: () => 'a\u0000', s: Symbol('x') })).toBeNull()
    // toJSON is what gets written.
    expect(findUnstorable({ d: new Date(0), t: { toJSON: () => 'a\u0000' } }, 'data')?.path).toBe('data.t')
    expect(findUnstorable({ n: 10n, big: [1n] })).toBeNull()
    const cyclic: Record<string, unknown> = { a: { b: 1 } }
    ;(cyclic.a as Record<string, unknown>).self = cyclic
    expect(findUnstorable(cyclic, 'data')).toEqual({ path: 'data.a.self', reason: 'is a circular reference, which JSON cannot hold' })
    // A shared (not circular) reference is fine.
    const shared = { x: 1 }
    expect(findUnstorable({ a: shared, b: [shared, shared] })).toBeNull()
    // What the allocation-free first pass leaves to the full walk is still judged as toJson writes it.
    expect(findUnstorable({ s: new String('a\u0000') }, 'data')?.path).toBe('data.s')
    expect(findUnstorable({ p: new (class { name = 'a\u0000' })() }, 'data')?.path).toBe('data.p.name')
    expect(findUnstorable(Object.assign(['fine'], { toJSON: () => ['\ud800'] }), 'data')?.path).toBe('data[0]')
    let deep: unknown = 'ok'
    for (let i = 0; i < 40; i++) deep = { d: deep }
    expect(findUnstorable(deep, 'data')).toBeNull()
    let deepBad: unknown = 'a\u0000'
    for (let i = 0; i < 40; i++) deepBad = [deepBad]
    expect(findUnstorable(deepBad, 'data')?.path).toBe(`data${'[0]'.repeat(40)}`)
  })

  test('sanitizeForJsonb makes any value storable, as JSON.stringify would see it', async () => {
    const cyclic: Record<string, unknown> = { name: 'loop' }
    cyclic.self = cyclic
    cyclic.list = [cyclic, 1]
    const shared = { s: 'x' }
    const value = {
      nul: 'a\u0000b',
      lone: ['\ud800', 'x\udfff', '😀'],
      'k\u0000ey': 1,
      big: 12345678901234567890n,
      nested: { deep: [{ n: Number.NaN, inf: Number.POSITIVE_INFINITY, ok: 1.5 }] },
      gone: undefined,
      fn: () => 1,
      sym: Symbol('s'),
      arr: [undefined, () => 1, Symbol('t'), null],
      date: new Date('2030-01-01T00:00:00Z'),
      boxed: [new String('s'), new Number(2), new Boolean(false)],
      custom: { toJSON: () => ({ inner: 'c\u0000' }) },
      cyclic,
      shared: [shared, shared],
      proto: JSON.parse('{"__proto__": {"polluted": true}}'),
    }
    const clean = sanitizeForJsonb(value)
    expect(clean).toEqual({
      nul: 'a\ufffdb',
      lone: ['\ufffd', 'x\ufffd', '😀'],
      'k\ufffdey': 1,
      big: '12345678901234567890',
      nested: { deep: [{ n: null, inf: null, ok: 1.5 }] },
      arr: [null, null, null, null],
      date: '2030-01-01T00:00:00.000Z',
      boxed: ['s', 2, false],
      custom: { inner: 'c\ufffd' },
      cyclic: { name: 'loop', self: '[circular]', list: ['[circular]', 1] },
      shared: [{ s: 'x' }, { s: 'x' }],
      proto: JSON.parse('{"__proto__": {"polluted": true}}'),
    })
    // The input is untouched, the output passes the check, and its JSON text is what stringify writes.
    expect(value.nul).toBe('a\u0000b')
    expect(findUnstorable(clean)).toBeNull()
    expect(Object.getPrototypeOf(clean)).toBe(Object.prototype)
    expect(Object.keys((clean as { proto: object }).proto)).toEqual(['__proto__'])
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
    // Top level, as JSON.stringify: non-JSON values give undefined (toJson writes null), primitives pass.
    expect(sanitizeForJsonb(undefined)).toBeUndefined()
    expect(sanitizeForJsonb(() => 1)).toBeUndefined()
    expect(sanitizeForJsonb('\u0000')).toBe('\ufffd')
    expect(sanitizeForJsonb(7n)).toBe('7')
    expect(sanitizeForJsonb(null)).toBeNull()
    expect(toJson(sanitizeForJsonb({ a: [1, 'b'] }))).toBe(JSON.stringify({ a: [1, 'b'] }))
  })

  test('parseIsoDateTime is strict: impossible dates are refused, not rolled over', () => {
    expect(parseIsoDateTime('2030-01-01T00:00:00Z')?.toISOString()).toBe('2030-01-01T00:00:00.000Z')
    expect(parseIsoDateTime('2030-06-15T10:20:30.123456+02:00')?.toISOString()).toBe('2030-06-15T08:20:30.123Z')
    expect(parseIsoDateTime('2030-06-15T10:20-05:30')?.toISOString()).toBe('2030-06-15T15:50:00.000Z')
    expect(parseIsoDateTime('2028-02-29T00:00:00Z')?.toISOString()).toBe('2028-02-29T00:00:00.000Z')
    expect(parseIsoDateTime('2030-01-01')?.toISOString()).toBe('2030-01-01T00:00:00.000Z')
    expect(parseIsoDateTime('0000-01-01T00:00:00Z')?.getUTCFullYear()).toBe(0) // parses; the range check refuses it
    for (const bad of [
      '2030-02-31',
      '2030-02-31T00:00:00Z',
      '2029-02-29T00:00:00Z',
      '2030-13-01T00:00:00Z',
      '2030-00-10T00:00:00Z',
      '2030-04-31T00:00:00Z',
      '2030-01-01T24:00:00Z',
      '2030-01-01T23:60:00Z',
      '2030-01-01T23:59:60Z',
      '2030-01-01T00:00:00+24:00',
      '2030-01-01T00:00:00', // no zone
      '2030-1-1',
      '+010000-01-01T00:00:00Z',
      'tomorrow',
      '',
    ]) {
      expect([bad, parseIsoDateTime(bad)]).toEqual([bad, null])
    }
  })
})

let db: TestDatabase
let app: ServerApp
let sql: postgres.Sql

beforeAll(async () => {
  db = await createTestDatabase('submit_hardening')
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

const rowCount = async () => (await sql`SELECT count(*)::int AS n FROM worker_jobs`)[0]!.n as number
const idleInTransaction = async () =>
  (await sql`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'`)[0]!
    .n as number

/** Every connection of the app's pool can be taken at once: none was leaked by a failed submission. */
async function poolIsFree() {
  const client = app.dbHandle.client
  const max = (client.options as { max: number }).max
  const reserved = await Promise.race([
    Promise.all(Array.from({ length: max }, () => client.reserve())),
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`could not reserve all ${max} pool connections`)), 10_000)),
  ])
  for (const r of reserved) r.release()
}

const rows = (n: number): NewJobRow[] => Array.from({ length: n }, () => validateJobInput(app.registry, { type: 'noop' }))

describe('Postgres refusing what validation would have let through', () => {
  test('a COPY refused after all its data was sent rejects, rolls back and frees its connection', async () => {
    const all = rows(1000)
    all[999] = { ...all[999]!, due: YEAR_ZERO }
    const err = await rejection(copyJobs(app.dbHandle.client, all.length, [all]))
    expect((err as { code?: string }).code).toMatch(/^22/)
    // submit turns it into an input error naming the row and column COPY reported.
    const input = databaseInputError(err, 'jobs')
    expect(input).toBeInstanceOf(JobInputError)
    expect((input as JobInputError).field).toBe('jobs[999].due')
    expect((input as Error).message).toStartWith('Invalid job input: jobs[999].due: refused by the database: ')
    expect(await idleInTransaction()).toBe(0)
    expect(await rowCount()).toBe(0)
    await poolIsFree()
    expect(await copyJobs(app.dbHandle.client, 1000, [rows(1000)])).toHaveLength(1000)
  })

  test('a COPY refused while it is still being sent stops, rejects and frees its connection', async () => {
    const row = rows(1)[0]!
    let produced = 0
    function* slices() {
      for (let s = 0; s < 200; s++) {
        produced++
        yield Array.from({ length: 1000 }, (_, i) => (s === 0 && i === 0 ? { ...row, userId: 2 ** 31 } : row))
      }
    }
    const err = await rejection(copyJobs(app.dbHandle.client, 200_000, slices()))
    expect((databaseInputError(err, 'jobs') as JobInputError).field).toBe('jobs[0].userId')
    // Postgres refuses line 1 at once: the rest of the 200 slices is neither validated nor sent.
    expect(produced).toBeLessThan(200)
    expect(await idleInTransaction()).toBe(0)
    expect(await rowCount()).toBe(0)
    await poolIsFree()
  })

  test('ten refused COPYs in a row do not take the pool (there are ten connections)', async () => {
    for (let i = 0; i < 10; i++) {
      const all = rows(600)
      all[i * 50] = { ...all[i * 50]!, removeDelay: 2 ** 31 }
      await rejection(copyJobs(app.dbHandle.client, all.length, [all]))
    }
    expect(await idleInTransaction()).toBe(0)
    await poolIsFree()
    expect(await copyJobs(app.dbHandle.client, 600, [rows(600)])).toHaveLength(600)
  })

  test('a refused INSERT (alone, or in a transaction with tags) rejects and frees its connection', async () => {
    const bad = [...rows(3), { ...rows(1)[0]!, maxAttempts: 2 ** 31 }]
    await rejection(insertJobs(app.db, bad))
    const tagged = bad.map((r, i) => ({ ...r, tag: `t${i}` }))
    await rejection(app.db.transaction((tx) => insertJobs(tx, tagged)))
    expect(await idleInTransaction()).toBe(0)
    expect(await rowCount()).toBe(0)
    await poolIsFree()
  })
})

/** One bad job in 1000, at `at`: validation must refuse it, naming `field`. */
interface BadCase {
  name: string
  at: number
  job: Record<string, unknown>
  field: string
  tagged?: boolean
}

// Validation errors, and values that only Postgres would refuse (COPY and INSERT) if validation let them through.
const API_CASES: BadCase[] = [
  { name: 'year 0000', at: 999, job: { type: 'noop', due: '0000-01-01T00:00:00Z' }, field: 'due' },
  { name: '31 February (date-time)', at: 0, job: { type: 'noop', due: '2030-02-31T00:00:00Z' }, field: 'due' },
  { name: '31 February (date)', at: 500, job: { type: 'noop', due: '2030-02-31' }, field: 'due' },
  { name: 'a Date Postgres cannot store', at: 1, job: { type: 'noop', due: YEAR_ZERO }, field: 'due' },
  { name: 'NUL in a data string', at: 2, job: { type: 'noop', data: { s: 'a\u0000b' } }, field: 'data.s' },
  { name: 'NUL in a data key', at: 998, job: { type: 'noop', data: { ok: 1, 'k\u0000': 1 } }, field: 'data["k\\u0000"]' },
  { name: 'lone surrogate in data', at: 250, job: { type: 'noop', data: { list: ['ok', '\ud800'] } }, field: 'data.list[1]' },
  { name: 'userId past int4', at: 777, job: { type: 'noop', userId: 2 ** 31 }, field: 'userId' },
  { name: 'removeDelay past int4', at: 42, job: { type: 'noop', removeDelay: 2 ** 31 }, field: 'removeDelay' },
  { name: 'unknown type', at: 999, job: { type: 'noSuchType' }, field: 'type' },
  { name: 'bad data for its type', at: 3, job: { type: 'sleep', data: { ms: 'soon' } }, field: 'data.ms' },
  { name: 'NUL in a tag (INSERT path)', at: 600, job: { type: 'noop', tag: 'a\u0000' }, field: 'tag', tagged: true },
]

function batch(c: BadCase): Record<string, unknown>[] {
  const jobs: Record<string, unknown>[] = Array.from({ length: 1000 }, (_, i) => ({ type: 'noop', ...(c.tagged ? { tag: `t${i}` } : {}) }))
  jobs[c.at] = c.job
  return jobs
}

describe('Twelve bad bulk submissions in a row leave the server healthy, the pool free, and no rows', () => {
  test('through workerManager.submitJobs', async () => {
    expect(API_CASES).toHaveLength(12)
    for (const c of API_CASES) {
      const err = await rejection(app.workerManager.submitJobs(batch(c) as never))
      expect([c.name, err]).toEqual([c.name, expect.any(JobInputError)])
      expect([c.name, (err as JobInputError).field]).toEqual([c.name, `jobs[${c.at}].${c.field}`])
      expect((err as Error).message).toStartWith(`Invalid job input: jobs[${c.at}]`)
    }
    expect(await idleInTransaction()).toBe(0)
    expect(await rowCount()).toBe(0)
    await poolIsFree()
    const good = await app.workerManager.submitJobs(batch({ name: 'good', at: 0, job: { type: 'noop' }, field: '' }) as never)
    expect(good).toHaveLength(1000)
    expect(await rowCount()).toBe(1000)
  })

  test('through submitJob, one at a time', async () => {
    for (const c of API_CASES) {
      const err = await rejection(app.workerManager.submitJob(c.job as never))
      expect([c.name, (err as JobInputError).field]).toEqual([c.name, c.field])
    }
    expect(await idleInTransaction()).toBe(0)
    expect(await rowCount()).toBe(0)
  })
})

// GraphQL cannot carry a Date object or an Int past 32 bits (graphql-js refuses those itself).
const GQL_CASES: BadCase[] = [
  ...API_CASES.filter((c) => !(c.job.due instanceof Date) && c.job.userId === undefined && c.job.removeDelay === undefined),
  { name: 'NUL in a cron string', at: 10, job: { type: 'noop', cronSchedule: '* * * * *\u0000' }, field: 'cronSchedule' },
  { name: 'a reserved tag', at: 300, job: { type: 'noop', tag: 'system:watchChain' }, field: 'tag', tagged: true },
  { name: 'lone low surrogate in a data key', at: 999, job: { type: 'noop', data: { '\udc00x': 1 } }, field: 'data["\\udc00x"]' },
]

describe('the same over HTTP GraphQL, against a real server', () => {
  let server: RunningServer
  let gdb: TestDatabase
  let gsql: postgres.Sql
  beforeAll(
    async () => {
      gdb = await createTestDatabase('submit_hardening_gql')
      server = await startTestServer(gdb.url, { WORKER_COUNT: '1', CRON_REMOVE_OLD_WORKER_JOBS: 'off', WORKER_SHUTDOWN_TIMEOUT_MS: '1000' })
      gsql = sqlClient(gdb.url)
    },
    { timeout: 30_000 },
  )
  afterAll(
    async () => {
      await server?.stop()
      await gsql?.end()
      await gdb?.drop()
    },
    { timeout: 30_000 },
  )

  const SUBMIT_JOBS = `mutation ($jobs: [SubmitJobInput!]!) { submitJobs(jobs: $jobs) { id } }`

  test('twelve bad 1000-job submitJobs: each a prompt BAD_USER_INPUT naming jobs[i].field; then /health 200 and a good batch', async () => {
    expect(GQL_CASES).toHaveLength(12)
    for (const c of GQL_CASES) {
      const res = (await Promise.race([
        gql(server.url, SUBMIT_JOBS, { jobs: batch(c) }),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${c.name}: no answer within 10 s`)), 10_000)),
      ])) as Awaited<ReturnType<typeof gql>>
      const field = `jobs[${c.at}].${c.field}`
      expect([c.name, res.data]).toEqual([c.name, null])
      expect([c.name, res.errors?.[0]?.extensions]).toEqual([c.name, expect.objectContaining({ code: 'BAD_USER_INPUT', field })])
      expect(res.errors?.[0]?.message).toStartWith(`Invalid job input: ${field}: `)
    }
    const [{ n: stuck }] = (await gsql`
      SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'`) as any
    expect(stuck).toBe(0)
    expect((await gsql`SELECT count(*)::int AS n FROM worker_jobs`)[0]!.n).toBe(0)
    // Every connection of the server's main pool is free.
    const client = server.serverApp.dbHandle.client
    const max = (client.options as { max: number }).max
    const reserved = await Promise.all(Array.from({ length: max }, () => client.reserve()))
    for (const r of reserved) r.release()
    expect((await fetch(`${server.url}/health`)).status).toBe(200)
    const good = await gql(server.url, SUBMIT_JOBS, { jobs: Array.from({ length: 1000 }, () => ({ type: 'noop' })) })
    expect(good.errors).toBeUndefined()
    expect(good.data.submitJobs).toHaveLength(1000)
  })
})
