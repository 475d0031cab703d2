import { afterAll, beforeAll, expect, test } from 'bun:test'
import postgres from 'postgres'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type ServerProcess, startServerProcess } from '../helpers/server'
import { waitFor } from '../helpers/wait'
import { workersOf } from '../helpers/workers'
import { gql, sampleKey as k, scrape } from './client'

/**
 * The event metrics of a real server (one child worker process): jobs that succeed, fail, are cancelled
 * while running and are rescued from a SIGKILLed child each move their counter by exactly one step per
 * run, the histograms count one observation per run, and the queue gauges follow what is pending and
 * running. The children report about once a second, so every check polls /metrics with a deadline.
 */
let db: TestDatabase
let server: ServerProcess
let sql: postgres.Sql

beforeAll(async () => {
  db = await createTestDatabase('run_metrics')
  sql = postgres(db.url, { max: 2, onnotice: () => {} })
  // No built-in cron rows: the table and the counters hold only what this file does.
  server = await startServerProcess({ DATABASE_URL: db.url, WORKER_COUNT: '1', CRON_REMOVE_OLD_WORKER_JOBS: 'off' })
})
afterAll(async () => {
  await server?.stop()
  await sql?.end()
  await db?.drop()
})

const runs = (s: Map<string, number>, type: string, outcome: string) => s.get(k('worker_job_runs_total', { type, outcome }))
const countOf = (s: Map<string, number>, histogram: string, type: string) => s.get(k(`${histogram}_count`, { type }))

/** Scrapes until `ready` holds on the samples; returns them. */
function scrapeUntil(ready: (s: Map<string, number>) => boolean, what: string): Promise<Map<string, number>> {
  return waitFor(
    async () => {
      const { samples } = await scrape(server.url)
      return ready(samples) ? samples : null
    },
    { what, timeoutMs: 15_000 },
  )
}

async function submit(jobs: Record<string, unknown>[]): Promise<string[]> {
  const res = await gql(server.url, `mutation ($jobs: [SubmitJobInput!]!) { submitJobs(jobs: $jobs) { id } }`, { jobs })
  expect(res.errors).toBeUndefined()
  return res.data.submitJobs.map((j: { id: string }) => j.id)
}

const startedRow = (id: string) =>
  waitFor(async () => (await sql`SELECT id FROM worker_jobs WHERE id = ${id} AND started IS NOT NULL AND finished IS NULL`)[0], {
    what: `job ${id} to start`,
  })

test('at start every counter of a registered type is 0 and no histogram has a series', async () => {
  const { samples } = await scrape(server.url)
  for (const outcome of ['succeeded', 'failed', 'cancelled', 'interrupted', 'rescued']) expect(runs(samples, 'noop', outcome)).toBe(0)
  expect(countOf(samples, 'worker_job_pickup_latency_seconds', 'noop')).toBeUndefined()
  expect(samples.get('worker_claim_errors_total')).toBe(0)
  expect(samples.get(k('worker_lease_rescues_total', { cause: 'worker_exited', action: 'failed' }))).toBe(0)
})

test('succeeded and failed runs: each counter and histogram moves by exactly the runs that ended', async () => {
  await submit([{ type: 'noop' }, { type: 'noop' }, { type: 'noop' }, { type: 'fail' }, { type: 'fail' }])
  const s = await scrapeUntil((s) => runs(s, 'noop', 'succeeded') === 3 && runs(s, 'fail', 'failed') === 2, 'three successes and two failures')
  // Their pickups were reported with (or before) their outcomes.
  expect(countOf(s, 'worker_job_pickup_latency_seconds', 'noop')).toBe(3)
  expect(countOf(s, 'worker_job_pickup_latency_seconds', 'fail')).toBe(2)
  expect(countOf(s, 'worker_job_run_seconds', 'noop')).toBe(3)
  expect(countOf(s, 'worker_job_run_seconds', 'fail')).toBe(2)
  expect(s.get(k('worker_job_run_seconds_bucket', { type: 'noop', le: '+Inf' }))).toBe(3)
  // A no-op picked up through NOTIFY: well under the 10 s bucket (the latency is measured, not zero-filled).
  expect(s.get(k('worker_job_pickup_latency_seconds_bucket', { type: 'noop', le: '10' }))).toBe(3)
  expect(s.get(k('worker_job_pickup_latency_seconds_sum', { type: 'noop' }))).toBeGreaterThan(0)
  expect(runs(s, 'noop', 'failed')).toBe(0)
  expect(runs(s, 'fail', 'succeeded')).toBe(0)
  expect(s.get(k('worker_queue_jobs', { state: 'pending_due' }))).toBe(0)
  expect(s.get(k('worker_queue_jobs', { state: 'running' }))).toBe(0)
})

test('queue depth: pending due, pending later and running, by type', async () => {
  // Due but of a type no live server registers: it stays pending (and shows under "unregistered").
  await sql`INSERT INTO worker_jobs (type, due) VALUES ('onlyOnANewerServer', now() - interval '1 second')`
  const future = new Date(Date.now() + 3600_000).toISOString()
  const [sleeper] = await submit([{ type: 'sleep', data: { ms: 60_000 } }, { type: 'noop', due: future }])
  await startedRow(sleeper!)
  const s = await scrapeUntil((s) => s.get(k('worker_queue_jobs', { state: 'running' })) === 1, 'the sleeping job to show as running')
  expect(s.get(k('worker_queue_jobs', { state: 'pending_due' }))).toBe(1)
  expect(s.get(k('worker_queue_jobs', { state: 'pending_future' }))).toBe(1)
  expect(s.get(k('worker_queue_jobs_by_type', { type: 'unregistered', state: 'pending_due' }))).toBe(1)
  expect(s.get(k('worker_queue_jobs_by_type', { type: 'noop', state: 'pending_future' }))).toBe(1)
  expect(s.get(k('worker_queue_jobs_by_type', { type: 'sleep', state: 'running' }))).toBe(1)
  expect(s.get('worker_jobs_unrunnable')).toBe(1)
  expect([...s.keys()].some((key) => key.includes('onlyOnANewerServer'))).toBe(false)

  // Cancelled while running: its handler stops, and the run counts as cancelled (not failed).
  const res = await gql(server.url, 'mutation ($id: ID!) { cancelJob(id: $id) { status } }', { id: sleeper })
  expect(res.errors).toBeUndefined()
  const after = await scrapeUntil((s) => runs(s, 'sleep', 'cancelled') === 1, 'the cancelled run')
  expect(runs(after, 'sleep', 'failed')).toBe(0)
  expect(runs(after, 'sleep', 'succeeded')).toBe(0)
  expect(countOf(after, 'worker_job_run_seconds', 'sleep')).toBe(1)
  expect(countOf(after, 'worker_job_pickup_latency_seconds', 'sleep')).toBe(1)
  expect(after.get(k('worker_queue_jobs', { state: 'running' }))).toBe(0)
})

test('a run rescued from a SIGKILLed child counts as rescued, once, and the totals survive the restart', async () => {
  const before = (await scrape(server.url)).samples
  // One attempt only: the rescuer fails it instead of returning it to pending, so nothing runs it again.
  const [id] = await submit([{ type: 'sleep', data: { ms: 60_000 }, maxAttempts: 1 }])
  await startedRow(id!)
  // Its pickup reached the manager before the kill (a killed child loses only what it has not sent yet).
  await scrapeUntil((s) => countOf(s, 'worker_job_pickup_latency_seconds', 'sleep') === 2, 'the pickup to be reported')
  const [worker] = await workersOf(server)
  process.kill(worker!.pid, 'SIGKILL')

  const s = await scrapeUntil(
    (s) => runs(s, 'sleep', 'rescued') === 1 && s.get('worker_process_restarts_total') === 1 && s.get('worker_processes_alive') === 1,
    'the rescue and the restart',
  )
  expect(s.get(k('worker_lease_rescues_total', { cause: 'worker_exited', action: 'failed' }))).toBe(1)
  expect(s.get(k('worker_lease_rescues_total', { cause: 'worker_exited', action: 'released' }))).toBe(0)
  expect(s.get(k('worker_lease_rescues_total', { cause: 'lease_expired', action: 'released' }))).toBe(0)
  // Nothing the dead child had reported was lost, and the rescued run is not also a failure.
  for (const [type, outcome] of [
    ['noop', 'succeeded'],
    ['fail', 'failed'],
    ['sleep', 'cancelled'],
    ['sleep', 'failed'],
  ] as const) {
    expect(runs(s, type, outcome)).toBe(runs(before, type, outcome))
  }
  // A rescued run's time is unknown: the run time histogram has only the cancelled run.
  expect(countOf(s, 'worker_job_run_seconds', 'sleep')).toBe(1)
  const [row] = await sql`SELECT success FROM worker_jobs WHERE id = ${id!}`
  expect(row).toMatchObject({ success: false })
  expect(s.get(k('worker_queue_jobs', { state: 'running' }))).toBe(0)

  // The new child counts on from the manager's totals.
  await submit([{ type: 'noop' }])
  const later = await scrapeUntil((s) => runs(s, 'noop', 'succeeded') === runs(before, 'noop', 'succeeded')! + 1, 'a run on the new child')
  expect(countOf(later, 'worker_job_pickup_latency_seconds', 'noop')).toBe(countOf(before, 'worker_job_pickup_latency_seconds', 'noop')! + 1)
})
