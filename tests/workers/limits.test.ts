import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'bun:test'
import type postgres from 'postgres'
import type { RunningServer } from '../../src/server/boot'
import { buildRegistry } from '../../src/server/workers/jobs/registry'
import { defineJob } from '../../src/server/workers/jobs/types'
import { cancelJob } from '../../src/server/workers/queue/cancel'
import { UNKEYED } from '../../src/server/workers/queue/limits'
import { JobInputError, validateJobInput } from '../../src/server/workers/queue/submit'
import { jobs as testJobs } from '../fixtures/testJobs'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { CREATE_RUNS_TABLE, sqlClient, startTestServer } from '../helpers/engine'
import { waitFor } from '../helpers/wait'
import { z } from 'zod'

/**
 * Concurrency limits hold across every worker of every server: two servers with two children each, the
 * `serial` type (concurrency 1) and `perKey` (one at a time per key), from the runs' own start/end times.
 */
let db: TestDatabase
let sql: postgres.Sql
let a: RunningServer
let b: RunningServer

const ENV = { WORKER_COUNT: '2', CRON_REMOVE_OLD_WORKER_JOBS: 'off' }

beforeAll(async () => {
  db = await createTestDatabase('limits')
  sql = sqlClient(db.url)
  await sql.unsafe(CREATE_RUNS_TABLE)
  ;[a, b] = await Promise.all([startTestServer(db.url, ENV), startTestServer(db.url, ENV)])
}, 60_000)
afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()])
  await sql.end()
  await db.drop()
})
beforeEach(async () => {
  await sql`TRUNCATE test_job_runs`
})

interface Run {
  job_id: string
  started_at: Date
  ended_at: Date
}

const runsOf = (ids: number[]) => sql<Run[]>`SELECT job_id, started_at, ended_at FROM test_job_runs WHERE job_id = ANY(${ids}) ORDER BY started_at`
const overlap = (x: Run, y: Run) => x.started_at < y.ended_at && y.started_at < x.ended_at
const allFinished = (ids: number[]) =>
  waitFor(async () => (await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE id = ANY(${ids}) AND finished IS NOT NULL`)[0]!.n === ids.length, {
    timeoutMs: 60_000,
    what: 'every job to finish',
  })

describe('concurrency: 1', () => {
  test('no two jobs of the type ever overlap, across two servers and four children, and they run back to back', async () => {
    // Due in pairs, 100 ms apart, each job 20 ms: the worker that ends a pair's first job hands the slot to
    // the second at once (queue/handoff.ts), which is due already; after it, nothing is due, and the next
    // pair's due time wakes every worker of both servers, which race for the slot. Both paths, 20 races.
    const start = Date.now() + 300
    const jobs = await a.workerManager.submitJobs(
      Array.from({ length: 40 }, (_, i) => ({ type: 'serial', data: { holdMs: 20 }, due: new Date(start + Math.floor(i / 2) * 100) })),
    )
    const ids = jobs.map((j) => j.id)
    await allFinished(ids)
    const runs = await runsOf(ids)
    expect(runs).toHaveLength(40)
    for (let i = 1; i < runs.length; i++) expect(runs[i]!.started_at >= runs[i - 1]!.ended_at).toBe(true)
    // Both servers took part, and each job was claimed once: a held-back job is never claimed and released.
    const rows = await sql`SELECT locked_by, attempt, last_error FROM worker_jobs WHERE id = ANY(${ids})`
    expect(new Set(rows.map((r) => r.locked_by)).size).toBeGreaterThan(1)
    expect(rows.every((r) => r.attempt === 1 && r.last_error === null)).toBe(true)
    // A freed slot is announced: no run waited for a poll (5 s) to start after the one before it ended.
    const gaps = runs.slice(1).map((r, i) => r.started_at.getTime() - runs[i]!.ended_at.getTime())
    expect(Math.max(...gaps)).toBeLessThan(1000)
  })

  test('a held-back job stays pending, in the limited index, while one runs', async () => {
    const [long, waiting] = await a.workerManager.submitJobs([
      { type: 'serial', data: { holdMs: 1500 } },
      { type: 'serial', data: { holdMs: 0 } },
    ])
    await waitFor(async () => (await sql`SELECT 1 FROM worker_jobs WHERE id = ${long!.id} AND started IS NOT NULL`).length > 0, { what: 'the long job to start' })
    const [row] = await sql`SELECT started, concurrency_key FROM worker_jobs WHERE id = ${waiting!.id}`
    expect(row).toEqual({ started: null, concurrency_key: '' })
    await allFinished([long!.id, waiting!.id])
    const [first, second] = await runsOf([long!.id, waiting!.id])
    expect(second!.started_at >= first!.ended_at).toBe(true)
  })

  test('a row written by hand without a key is marked unkeyed and runs under the type-wide limit as it is', async () => {
    const inserted = await sql`INSERT INTO worker_jobs (type, data) SELECT 'serial', '{"holdMs": 30}' FROM generate_series(1, 6) RETURNING id, concurrency_key`
    const ids = inserted.map((r) => Number(r.id))
    const keys = await sql`SELECT DISTINCT concurrency_key FROM worker_jobs WHERE id = ANY(${ids})`
    expect(keys.map((k) => k.concurrency_key)).toEqual([UNKEYED])
    await allFinished(ids)
    const runs = await runsOf(ids)
    for (let i = 1; i < runs.length; i++) expect(runs[i]!.started_at >= runs[i - 1]!.ended_at).toBe(true)
  })

  test('a child SIGKILLed mid-job frees the slot when its job is rescued, and the limit still holds', async () => {
    const [long, ...rest] = await a.workerManager.submitJobs([
      { type: 'serial', data: { holdMs: 60_000 } },
      ...Array.from({ length: 3 }, () => ({ type: 'serial', data: { holdMs: 10 } })),
    ])
    const holder = await waitFor(async () => (await sql`SELECT locked_by FROM worker_jobs WHERE id = ${long!.id} AND started IS NOT NULL`)[0]?.locked_by as string | undefined, {
      what: 'the long job to start',
    })
    const worker = [...a.workerManager.statusWithoutCounts(), ...b.workerManager.statusWithoutCounts()].find((w) => w.id === holder)!
    process.kill(worker.pid!, 'SIGKILL')
    // Rescued at once by its manager (back to pending, attempt 2), then the short ones and the rerun share the slot.
    const ids = rest.map((j) => j.id)
    await allFinished(ids)
    const [rerun] = await sql`SELECT attempt, last_error, started FROM worker_jobs WHERE id = ${long!.id}`
    expect(rerun!.attempt).toBe(2)
    expect(rerun!.last_error).toContain('worker process exited')
    const runs = await runsOf(ids)
    for (let i = 1; i < runs.length; i++) expect(runs[i]!.started_at >= runs[i - 1]!.ended_at).toBe(true)
    // The rerun holds the slot now; cancel it so it gives the slot back.
    await cancelJob(a.serverApp.db, long!.id, { by: 'test' })
    await allFinished([long!.id])
  })
})

describe('concurrencyKey', () => {
  test('jobs of one key never overlap; jobs of different keys run in parallel', async () => {
    const inputs = ['alice', 'bob', 'carol'].flatMap((key) => Array.from({ length: 8 }, () => ({ type: 'perKey', data: { key, holdMs: 40 } })))
    const jobs = await a.workerManager.submitJobs(inputs)
    const ids = jobs.map((j) => j.id)
    await allFinished(ids)
    const runs = await runsOf(ids)
    const keyOf = new Map(jobs.map((j) => [String(j.id), (j.data as { key: string }).key]))
    let parallel = 0
    for (let i = 0; i < runs.length; i++) {
      for (let k = i + 1; k < runs.length; k++) {
        if (!overlap(runs[i]!, runs[k]!)) continue
        expect(keyOf.get(runs[i]!.job_id)).not.toBe(keyOf.get(runs[k]!.job_id))
        parallel++
      }
    }
    expect(parallel).toBeGreaterThan(0)
    const keys = await sql`SELECT DISTINCT concurrency_key FROM worker_jobs WHERE id = ANY(${ids}) ORDER BY 1`
    expect(keys.map((k) => k.concurrency_key)).toEqual(['alice', 'bob', 'carol'])
  })
})

describe('definitions and keys', () => {
  test('a limit that can never be met is a startup error', () => {
    const base = { dataSchema: z.object({}), async run() {} }
    expect(() => buildRegistry([defineJob({ ...base, type: 'x', concurrency: 0 })])).toThrow('concurrency')
    expect(() => buildRegistry([defineJob({ ...base, type: 'x', concurrency: 1.5 })])).toThrow('concurrency')
    expect(() => buildRegistry([defineJob({ ...base, type: 'x', keyConcurrency: 2 })])).toThrow('concurrencyKey')
  })

  test('a key function that throws or returns no string is refused at submit, naming data, and nothing is written', async () => {
    const registry = buildRegistry([
      ...testJobs.filter((j) => j.type === 'noop'),
      defineJob({ type: 'badKey', dataSchema: z.object({ n: z.number() }), concurrencyKey: (d) => (d.n > 0 ? (d.n as unknown as string) : 'x'.repeat(500)), async run() {} }),
    ])
    for (const n of [1, -1]) {
      const err = (() => {
        try {
          validateJobInput(registry, { type: 'badKey', data: { n } })
        } catch (e) {
          return e
        }
      })()
      expect(err).toBeInstanceOf(JobInputError)
      expect((err as JobInputError).field).toBe('data')
    }
  })
})
