import { expect, test } from 'bun:test'
import { Histogram, Registry } from 'prom-client'
import { JobMetricsRecorder, PICKUP_BUCKETS, pickupLatencyMs, RUN_BUCKETS } from '../../src/server/workers/jobMetrics'
import { JobMetricsTotals } from '../../src/server/workers/jobMetricsTotals'
import { buildRegistry } from '../../src/server/workers/jobs/registry'
import { parsePrometheus, sampleKey as k } from '../http/client'

/** The event metrics without processes: what a child accumulates, and how the manager adds it up. */

const registry = buildRegistry()

async function render(totals: JobMetricsTotals): Promise<Map<string, number>> {
  const reg = new Registry()
  for (const m of totals.all) reg.registerMetric(m)
  return parsePrometheus(await reg.metrics())
}

test('a merged report renders exactly like the same observations made one by one in prom-client', async () => {
  const values = [0, 0.0004, 0.001, 0.003, 0.2, 0.2, 4, 1000]
  const recorder = new JobMetricsRecorder()
  for (const v of values) recorder.pickedUp('watchChain', v * 1000)
  const totals = new JobMetricsTotals(registry)
  totals.merge(recorder.take()!)
  // A second report adds to the first.
  for (const v of values) recorder.pickedUp('watchChain', v * 1000)
  totals.merge(recorder.take()!)

  const reference = new Histogram({ name: 'worker_job_pickup_latency_seconds', help: 'x', labelNames: ['type'], buckets: [...PICKUP_BUCKETS], registers: [] })
  for (const v of [...values, ...values]) reference.observe({ type: 'watchChain' }, v)
  const ref = new Registry()
  ref.registerMetric(reference)
  const expected = [...parsePrometheus(await ref.metrics())]
  const got = await render(totals)
  for (const [key, value] of expected) expect(got.get(key)).toBeCloseTo(value, 9)
  expect(got.get(k('worker_job_pickup_latency_seconds_count', { type: 'watchChain' }))).toBe(16)
  expect(got.get(k('worker_job_pickup_latency_seconds_bucket', { type: 'watchChain', le: '0.001' }))).toBe(6)
})

test('take() hands over the increments once and starts afresh; nothing counted is null', () => {
  const r = new JobMetricsRecorder()
  expect(r.take()).toBeNull()
  r.runEnded('noop', 'succeeded', 2)
  r.runEnded('noop', 'succeeded', 2000)
  r.runEnded('noop', 'cancelled', undefined)
  r.claimFailed()
  r.chainLagSeen(31337, 12n)
  const d = r.take()!
  expect(d.runs.sort()).toEqual([
    ['noop', 'cancelled', 1],
    ['noop', 'succeeded', 2],
  ])
  expect(d.runTime.noop!.counts.reduce((a, b) => a + b, 0)).toBe(2)
  expect(d.runTime.noop!.counts[RUN_BUCKETS.indexOf(0.005)]).toBe(1)
  expect(d.runTime.noop!.sum).toBeCloseTo(2.002, 9)
  expect(d.claimErrors).toBe(1)
  expect(d.chainLag).toEqual({ '31337': 12 })
  expect(r.take()).toBeNull()
})

test('labels: a type this server does not register is "unregistered", an outcome outside the set is dropped', async () => {
  const totals = new JobMetricsTotals(registry)
  totals.merge({
    runs: [
      ['noop-from-a-newer-server', 'succeeded', 2],
      ['constructor', 'failed', 1],
      ['removeOldWorkerJobs', 'bogus' as any, 5],
    ],
    pickup: { 'user supplied text': { counts: new Array(PICKUP_BUCKETS.length + 1).fill(0).map((_, i) => (i === 0 ? 1 : 0)), sum: 0 } },
    runTime: {},
    claimErrors: 3,
    chainLag: { '1': 7, 'not a chain id': 1 },
  })
  totals.rescued('someoneElsesType', 'lease_expired', 'released')
  const s = await render(totals)
  expect(s.get(k('worker_job_runs_total', { type: 'unregistered', outcome: 'succeeded' }))).toBe(2)
  expect(s.get(k('worker_job_runs_total', { type: 'unregistered', outcome: 'failed' }))).toBe(1)
  expect(s.get(k('worker_job_runs_total', { type: 'unregistered', outcome: 'rescued' }))).toBe(1)
  expect(s.get(k('worker_job_runs_total', { type: 'removeOldWorkerJobs', outcome: 'succeeded' }))).toBe(0)
  expect([...s.keys()].some((key) => key.includes('bogus') || key.includes('user supplied') || key.includes('not a chain'))).toBe(false)
  expect(s.get(k('worker_job_pickup_latency_seconds_count', { type: 'unregistered' }))).toBe(1)
  expect(s.get('worker_claim_errors_total')).toBe(3)
  expect(s.get(k('worker_lease_rescues_total', { cause: 'lease_expired', action: 'released' }))).toBe(1)
  expect(s.get(k('worker_chain_lag_blocks', { chain_id: '1' }))).toBe(7)
})

test('pickup latency runs from the later of due and created_at to started', () => {
  const t = (s: number) => new Date(1_700_000_000_000 + s * 1000)
  expect(pickupLatencyMs({ due: t(10), createdAt: t(0), started: t(10.5) })).toBe(500)
  // Submitted with a due time already past: the time before the row existed is not latency.
  expect(pickupLatencyMs({ due: t(-3600), createdAt: t(0), started: t(0.002) })).toBe(2)
  expect(pickupLatencyMs({ due: t(0), createdAt: t(0), started: null })).toBeNull()
})
