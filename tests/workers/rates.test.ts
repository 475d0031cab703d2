import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'bun:test'
import type postgres from 'postgres'
import { z } from 'zod'
import type { RunningServer } from '../../src/server/boot'
import { buildRegistry } from '../../src/server/workers/jobs/registry'
import { defineJob } from '../../src/server/workers/jobs/types'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { CREATE_RUNS_TABLE, sqlClient, startTestServer } from '../helpers/engine'
import { waitFor } from '../helpers/wait'

/**
 * Rate limits hold across every worker of every server: two servers with two children each, `rated`
 * (10 starts per second, type-wide) and `keyRated` (5 per second per key), measured from the rows'
 * own `started`, which the claim stamps with the clock it counted the window by.
 */
let db: TestDatabase
let sql: postgres.Sql
let a: RunningServer
let b: RunningServer

const ENV = { WORKER_COUNT: '2', CRON_REMOVE_OLD_WORKER_JOBS: 'off' }
const RATE_JOBS = new URL('../fixtures/rateJobs.ts', import.meta.url).pathname

beforeAll(async () => {
  db = await createTestDatabase('rates')
  sql = sqlClient(db.url)
  await sql.unsafe(CREATE_RUNS_TABLE)
  ;[a, b] = await Promise.all([startTestServer(db.url, ENV, [RATE_JOBS]), startTestServer(db.url, ENV, [RATE_JOBS])])
}, 60_000)
afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()])
  await sql.end()
  await db.drop()
})
beforeEach(async () => {
  await sql`TRUNCATE test_job_runs`
})

interface Started {
  id: string
  started: Date
  success: boolean
  key: string
}

const finishedRows = async (ids: number[]) => {
  await waitFor(async () => (await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE id = ANY(${ids}) AND finished IS NOT NULL`)[0]!.n === ids.length, {
    timeoutMs: 90_000,
    what: 'every job to finish',
  })
  return sql<Started[]>`SELECT id, started, success, concurrency_key AS key FROM worker_jobs WHERE id = ANY(${ids}) ORDER BY started, id`
}

/** The largest number of starts inside any window of `perMs` (a window ending at each start). */
function busiestWindow(starts: number[], perMs: number): number {
  let most = 0
  for (let i = 0, j = 0; i < starts.length; i++) {
    while (starts[i]! - starts[j]! >= perMs) j++
    most = Math.max(most, i - j + 1)
  }
  return most
}

describe('rateLimit: 10 per second', () => {
  test('holds over 30 s across two servers and four children; jobs over the rate wait and none fails', async () => {
    const jobs = await a.workerManager.submitJobs(Array.from({ length: 300 }, () => ({ type: 'rated' })))
    const rows = await finishedRows(jobs.map((j) => j.id))
    expect(rows.every((r) => r.success)).toBe(true)
    const starts = rows.map((r) => r.started.getTime())
    expect(busiestWindow(starts, 1000)).toBeLessThanOrEqual(10)
    // Not lower either: 300 starts at 10 a second need 29 s from the first to the last.
    const spanS = (starts.at(-1)! - starts[0]!) / 1000
    expect(spanS).toBeGreaterThanOrEqual(29)
    expect(spanS).toBeLessThan(33)
    // Each ran once, and both servers took part.
    const runs = await sql`SELECT job_id, pid FROM test_job_runs`
    expect(runs).toHaveLength(300)
    expect(new Set(runs.map((r) => r.pid)).size).toBeGreaterThanOrEqual(2)
    const [log] = await sql`SELECT count(*)::int AS n FROM worker_rate_starts WHERE type = 'rated'`
    // The log keeps one window, not every start.
    expect(log!.n).toBeLessThanOrEqual(20)
  }, 120_000)
})

describe('keyRateLimit: 5 per second per key', () => {
  test('each key keeps to its rate; different keys run side by side', async () => {
    const input = ['k1', 'k2', 'k3'].flatMap((key) => Array.from({ length: 15 }, () => ({ type: 'keyRated', data: { key } })))
    const jobs = await b.workerManager.submitJobs(input)
    const rows = await finishedRows(jobs.map((j) => j.id))
    expect(rows.every((r) => r.success)).toBe(true)
    const byKey = Map.groupBy(rows, (r) => r.key)
    expect([...byKey.keys()].sort()).toEqual(['k1', 'k2', 'k3'])
    for (const list of byKey.values()) {
      const starts = list.map((r) => r.started.getTime())
      expect(busiestWindow(starts, 1000)).toBeLessThanOrEqual(5)
      expect((starts.at(-1)! - starts[0]!) / 1000).toBeGreaterThanOrEqual(2)
    }
    // Side by side: 15 starts in the first second (5 per key), not 5.
    const all = rows.map((r) => r.started.getTime())
    expect(all.filter((t) => t - all[0]! < 1000).length).toBe(15)
  }, 60_000)
})

describe('/metrics', () => {
  test("shows each rate-limited type's max and window, per scope", async () => {
    const text = await (await fetch(`${a.url}/metrics`)).text()
    expect(text).toContain('worker_job_rate_limit{type="rated",scope="type"} 10')
    expect(text).toContain('worker_job_rate_limit_window_seconds{type="rated",scope="type"} 1')
    expect(text).toContain('worker_job_rate_limit{type="keyRated",scope="key"} 5')
    expect(text).not.toContain('worker_job_rate_limit{type="serial"')
  })
})

describe('definitions', () => {
  test('a rate that could never be met is a startup error naming it', () => {
    const base = { dataSchema: z.object({}), async run() {} }
    expect(() => buildRegistry([defineJob({ ...base, type: 'x', rateLimit: { max: 0, perMs: 1000 } })])).toThrow('rateLimit')
    expect(() => buildRegistry([defineJob({ ...base, type: 'x', rateLimit: { max: 5, perMs: 0.5 } })])).toThrow('rateLimit')
    expect(() => buildRegistry([defineJob({ ...base, type: 'x', rateLimit: {} as never })])).toThrow('rateLimit')
    expect(() => buildRegistry([defineJob({ ...base, type: 'x', keyRateLimit: { max: 5, perMs: 1000 } })])).toThrow('concurrencyKey')
  })
})
