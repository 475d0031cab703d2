import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import postgres from 'postgres'
import { register as globalRegister } from 'prom-client'
import { loadConfig } from '../../src/server/config'
import { createHttpApp } from '../../src/server/http/app'
import { createLogger } from '../../src/server/log'
import { createServerApp } from '../../src/server/serverApp'
import { buildRegistry } from '../../src/server/workers/jobs/registry'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type ServerProcess, startServerProcess, TEST_ENV } from '../helpers/server'
import { workersOf } from '../helpers/workers'
import { waitFor } from '../helpers/wait'
import { gql, parsePrometheus, sampleKey as k, scrape } from './client'

const STATES = ['pending_due', 'pending_future', 'running'] as const

const dbs: TestDatabase[] = []
const servers: ServerProcess[] = []
const sqls: postgres.Sql[] = []

async function setup(workerCount: string) {
  const db = await createTestDatabase('metrics')
  dbs.push(db)
  // No built-in cron rows: the table holds only what a test puts there, so the counts are exact.
  const server = await startServerProcess({ DATABASE_URL: db.url, WORKER_COUNT: workerCount, CRON_REMOVE_OLD_WORKER_JOBS: 'off' })
  servers.push(server)
  const sql = postgres(db.url, { max: 2, onnotice: () => {} })
  sqls.push(sql)
  return { db, server, sql }
}

afterAll(
  async () => {
    for (const s of servers) await s.stop()
    for (const s of sqls) await s.end()
    for (const d of dbs) await d.drop()
  },
  { timeout: 30_000 },
)

describe('/metrics with one worker', () => {
  let env: Awaited<ReturnType<typeof setup>>
  beforeAll(
    async () => {
      env = await setup('1')
    },
    { timeout: 30_000 },
  )

  test('serves Prometheus text with zeroed job gauges and the worker gauges', async () => {
    const { status, contentType, samples } = await scrape(env.server.url)
    expect(status).toBe(200)
    expect(contentType).toStartWith('text/plain; version=0.0.4')
    for (const state of STATES) expect(samples.get(k('worker_queue_jobs', { state }))).toBe(0)
    // The event counters exist from the start, at 0, for every registered type.
    expect(samples.get(k('worker_job_runs_total', { type: 'noop', outcome: 'succeeded' }))).toBe(0)
    expect(samples.get('worker_claim_errors_total')).toBe(0)
    expect(samples.get('worker_queue_depth')).toBe(0)
    expect(samples.get('worker_queue_oldest_due_age_seconds')).toBe(0)
    expect(samples.get('worker_jobs_query_up')).toBe(1)
    expect(samples.get('worker_processes_alive')).toBe(1)
    expect(samples.get('worker_processes_configured')).toBe(1)
    expect(samples.get('worker_process_restarts_total')).toBe(0)
    // The test types' concurrency limits (tests/fixtures/testJobs.ts), and nothing for unlimited types.
    expect(samples.get(k('worker_job_concurrency_limit', { scope: 'type', type: 'serial' }))).toBe(1)
    expect(samples.get(k('worker_job_concurrency_limit', { scope: 'key', type: 'perKey' }))).toBe(1)
    expect(samples.get(k('worker_job_concurrency_limit', { scope: 'type', type: 'noop' }))).toBeUndefined()
    // No rate limits among these types (tests/workers/rates.test.ts checks those); the due backlog by priority sign.
    expect(samples.get(k('worker_job_rate_limit', { scope: 'type', type: 'serial' }))).toBeUndefined()
    for (const priority of ['negative', 'zero', 'positive']) expect(samples.get(k('worker_queue_depth_by_priority', { priority }))).toBe(0)
  })

  test('counts the runs by type and outcome, and the queue by state, after some ran', async () => {
    const future = new Date(Date.now() + 3600_000).toISOString()
    const res = await gql(env.server.url, `mutation ($jobs: [SubmitJobInput!]!) { submitJobs(jobs: $jobs) { id } }`, {
      jobs: [{ type: 'noop' }, { type: 'noop' }, { type: 'noop' }, { type: 'fail' }, { type: 'fail' }, { type: 'noop', due: future }],
    })
    expect(res.errors).toBeUndefined()
    // The children report their counts about once a second: poll the scrape itself.
    const samples = await waitFor(
      async () => {
        const { samples } = await scrape(env.server.url)
        const runs = (type: string, outcome: string) => samples.get(k('worker_job_runs_total', { type, outcome }))
        return runs('noop', 'succeeded') === 3 && runs('fail', 'failed') === 2 ? samples : null
      },
      { what: 'the five runs to show in /metrics' },
    )
    expect(samples.get(k('worker_job_runs_total', { type: 'noop', outcome: 'failed' }))).toBe(0)
    expect(samples.get(k('worker_job_runs_total', { type: 'fail', outcome: 'succeeded' }))).toBe(0)
    const expected = { pending_due: 0, pending_future: 1, running: 0 }
    for (const state of STATES) expect(samples.get(k('worker_queue_jobs', { state }))).toBe(expected[state])
    expect(samples.get(k('worker_queue_jobs_by_type', { type: 'noop', state: 'pending_future' }))).toBe(1)
    // The one pending job is not due yet: nothing is waiting for a worker.
    expect(samples.get('worker_queue_depth')).toBe(0)
    expect(samples.get('worker_queue_oldest_due_age_seconds')).toBe(0)
  })

  test('concurrent scrapes all succeed and agree', async () => {
    const all = await Promise.all(Array.from({ length: 5 }, () => scrape(env.server.url)))
    for (const s of all) {
      expect(s.status).toBe(200)
      expect(s.samples.get(k('worker_job_runs_total', { type: 'noop', outcome: 'succeeded' }))).toBe(3)
      expect(s.samples.get(k('worker_queue_jobs', { state: 'pending_future' }))).toBe(1)
    }
  })

  test('a killed worker shows up as a restart', async () => {
    // /health names no pid; the helper reads it from the server's log.
    const pidOf = async () => (await workersOf(env.server))[0]!.pid
    const pid = await pidOf()
    process.kill(pid, 'SIGKILL')
    const after = await waitFor(
      async () => {
        const { samples } = await scrape(env.server.url)
        return samples.get('worker_process_restarts_total') === 1 && samples.get('worker_processes_alive') === 1 ? samples : null
      },
      { what: 'the restart to show in /metrics' },
    )
    expect(after.get('worker_processes_configured')).toBe(1)
    expect(await pidOf()).not.toBe(pid)
  })
})

describe('/metrics with no workers', () => {
  let env: Awaited<ReturnType<typeof setup>>
  beforeAll(
    async () => {
      env = await setup('0')
    },
    { timeout: 30_000 },
  )

  test('queue depth and the oldest due age count due pending jobs only', async () => {
    // Nobody claims these: WORKER_COUNT=0.
    await env.sql`INSERT INTO worker_jobs (type, due) VALUES
      ('noop', now() - interval '90 seconds'), ('noop', now() - interval '30 seconds'),
      ('sleep', now() - interval '10 seconds'), ('noop', now() + interval '1 hour')`
    await env.sql`INSERT INTO worker_jobs (type, due, started, finished, success) VALUES ('noop', now() - interval '1 day', now(), now(), true)`
    const { samples } = await scrape(env.server.url)
    expect(samples.get('worker_queue_depth')).toBe(3)
    const age = samples.get('worker_queue_oldest_due_age_seconds')!
    expect(age).toBeGreaterThanOrEqual(90)
    expect(age).toBeLessThan(90 + 30)
    expect(samples.get(k('worker_queue_jobs', { state: 'pending_due' }))).toBe(3)
    expect(samples.get(k('worker_queue_jobs', { state: 'pending_future' }))).toBe(1)
    expect(samples.get(k('worker_queue_jobs_by_type', { type: 'sleep', state: 'pending_due' }))).toBe(1)
    expect(samples.get('worker_processes_alive')).toBe(0)
    expect(samples.get('worker_processes_configured')).toBe(0)
  })

  test('two servers in one process each have their own registry', async () => {
    const config = loadConfig({ DATABASE_URL: env.db.url, CHAIN_RPC_URL: TEST_ENV.CHAIN_RPC_URL, NODE_ENV: 'test' })
    const log = createLogger({ level: 'silent' })
    const apps = [0, 1].map(() => createServerApp({ config, log, registry: buildRegistry(), dbPoolSize: 1 }))
    try {
      for (const serverApp of apps) {
        const res = await createHttpApp(serverApp, null).handle(new Request('http://localhost/metrics'))
        expect(res.status).toBe(200)
        const samples = parsePrometheus(await res.text())
        expect(samples.get(k('worker_queue_jobs', { state: 'pending_due' }))).toBe(3)
        // No manager, no worker gauges and no event metrics.
        expect(samples.has('worker_processes_alive')).toBe(false)
        expect(samples.has('worker_claim_errors_total')).toBe(false)
      }
      expect(globalRegister.getSingleMetric('worker_queue_jobs')).toBeUndefined()
      expect(globalRegister.getSingleMetric('worker_job_runs_total')).toBeUndefined()
    } finally {
      for (const a of apps) await a.dbHandle.close()
    }
  })
})
