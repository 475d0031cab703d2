import { sql } from 'drizzle-orm'
import { Counter, Gauge, Registry } from 'prom-client'
import type { Database } from '../db/client'
import { workerJobs } from '../db/schema'
import { STATUS_WHERE } from '../workers/queue/states'
import { limitOf } from '../workers/queue/limits'
import { countUnrunnable } from '../workers/queue/unrunnable'
import type { ServerApp } from '../serverApp'
import type { WorkerManager } from '../workers/manager'

/**
 * GET /metrics: Prometheus text. Job gauges are computed at scrape time from the table (the truth, shared
 * by every instance), in one grouped query; worker gauges come from this server's WorkerManager.
 * Each server gets its own Registry, so several servers in one process (tests) never clash.
 *
 * Access: with METRICS_TOKEN set, a scrape must send `Authorization: Bearer <METRICS_TOKEN>` (401 otherwise;
 * checked in http/app.ts). Without it the endpoint is open, and boot logs that once: keep it unreachable
 * from outside then (HOST on loopback, or a proxy that does not route /metrics).
 *
 * What it may show: counts only. Labels are `state` (a fixed set) and `type` (a job type name); never a
 * user id, a wallet, a job id, a host name or a pid, and never an error text. A label whose values come
 * from users would also let them grow the series without bound.
 */

const STATES = ['pending', 'running', 'succeeded', 'failed'] as const
type State = (typeof STATES)[number]

export interface JobSnapshotRow extends Record<State, number> {
  type: string
  /** Pending jobs whose due time has passed: waiting for a worker. */
  due: number
  /** Age of the oldest due pending job in seconds, by the database's clock; null when there is none. */
  oldestDueAgeSeconds: number | null
  /** The due pending jobs by the sign of their priority (below 0: built-in and admin jobs; lower runs first). */
  dueAbove: number
  dueZero: number
  dueBelow: number
}

const QUERY_TIMEOUT_MS = 2000

/** One round trip; counts per type and state. Pending/running/due rows are few; finished ones are scanned. */
export function queryJobSnapshot(db: Database): Promise<JobSnapshotRow[]> {
  const t = workerJobs
  const isDue = sql`${STATUS_WHERE.PENDING} AND ${t.due} <= now()`
  const count = (cond: ReturnType<typeof sql>) => sql<number>`(count(*) FILTER (WHERE ${cond}))::int`
  return db
    .select({
      type: t.type,
      pending: count(STATUS_WHERE.PENDING),
      running: count(STATUS_WHERE.RUNNING),
      succeeded: count(STATUS_WHERE.SUCCEEDED),
      failed: count(STATUS_WHERE.FAILED),
      due: count(isDue),
      oldestDueAgeSeconds: sql<number | null>`extract(epoch FROM now() - min(${t.due}) FILTER (WHERE ${isDue}))::float8`,
      dueBelow: count(sql`${isDue} AND ${t.priority} < 0`),
      dueZero: count(sql`${isDue} AND ${t.priority} = 0`),
      dueAbove: count(sql`${isDue} AND ${t.priority} > 0`),
    })
    .from(t)
    .groupBy(t.type)
}

export interface Metrics {
  contentType: string
  render(): Promise<string>
}

export function createMetrics(serverApp: ServerApp, manager: WorkerManager | null): Metrics {
  const registry = new Registry()
  const registers = [registry]
  const jobs = new Gauge({ name: 'worker_jobs', help: 'Jobs in worker_jobs by state', labelNames: ['state'], registers })
  const jobsByType = new Gauge({ name: 'worker_jobs_by_type', help: 'Jobs in worker_jobs by type and state', labelNames: ['type', 'state'], registers })
  const queueDepth = new Gauge({ name: 'worker_queue_depth', help: 'Pending jobs whose due time has passed', registers })
  const oldestDue = new Gauge({ name: 'worker_queue_oldest_due_age_seconds', help: 'Age of the oldest due pending job (0 when none)', registers })
  // Priorities are any smallint, so the label is the sign only: a label per value would let users grow the series.
  const depthByPriority = new Gauge({
    name: 'worker_queue_depth_by_priority',
    help: 'Pending jobs whose due time has passed, by priority: "negative" (built-in and admin jobs, run first), "zero" (the default), "positive"',
    labelNames: ['priority'],
    registers,
  })
  const unrunnable = new Gauge({
    name: 'worker_jobs_unrunnable',
    help: 'Due pending jobs of a type that no live server registers (they wait for one that does)',
    registers,
  })
  // The registry's concurrency limits (queue/limits.ts): with worker_jobs_by_type{state="running"} beside
  // them, how close each limited type runs to its cap.
  const limits = new Gauge({
    name: 'worker_job_concurrency_limit',
    help: 'Concurrency limit of each limited job type: scope "type" is cluster-wide, "key" per concurrencyKey',
    labelNames: ['type', 'scope'],
    registers,
  })
  const rateMax = new Gauge({
    name: 'worker_job_rate_limit',
    help: 'Rate limit of each rate-limited job type: at most this many starts per window, cluster-wide (scope "type") or per concurrencyKey ("key")',
    labelNames: ['type', 'scope'],
    registers,
  })
  const rateWindow = new Gauge({
    name: 'worker_job_rate_limit_window_seconds',
    help: 'The window of worker_job_rate_limit, in seconds',
    labelNames: ['type', 'scope'],
    registers,
  })
  for (const def of Object.values(serverApp.registry)) {
    const limit = limitOf(def)
    if (limit?.concurrency) limits.set({ type: def.type, scope: 'type' }, limit.concurrency)
    if (limit?.perKey) limits.set({ type: def.type, scope: 'key' }, limit.perKey)
    for (const [scope, rate] of [['type', limit?.rate], ['key', limit?.keyRate]] as const) {
      if (!rate) continue
      rateMax.set({ type: def.type, scope }, rate.max)
      rateWindow.set({ type: def.type, scope }, rate.perMs / 1000)
    }
  }
  const dbUp = new Gauge({ name: 'worker_jobs_query_up', help: '1 when this scrape could read the job table, else 0', registers })

  if (manager) {
    new Gauge({
      name: 'worker_processes_alive',
      help: 'Child worker processes alive on this server',
      registers,
      collect() {
        this.set(manager.aliveCount)
      },
    })
    new Gauge({
      name: 'worker_processes_configured',
      help: 'Child worker processes this server is configured to run (WORKER_COUNT)',
      registers,
      collect() {
        this.set(manager.configuredCount)
      },
    })
    new Counter({
      name: 'worker_process_restarts_total',
      help: 'Child worker process restarts since this server started',
      registers,
      collect() {
        // The manager keeps the count; the counter only mirrors it.
        this.reset()
        this.inc(manager.statusWithoutCounts().reduce((n, w) => n + w.restarts, 0))
      },
    })
  }

  async function refreshJobGauges(): Promise<void> {
    jobs.reset()
    jobsByType.reset()
    let rows: JobSnapshotRow[]
    let waiting: number
    try {
      ;[rows, waiting] = await Promise.race([
        Promise.all([queryJobSnapshot(serverApp.db), countUnrunnable(serverApp.db)]),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no answer within ${QUERY_TIMEOUT_MS} ms`)), QUERY_TIMEOUT_MS)),
      ])
    } catch (err) {
      // Still answer with the worker gauges; the job gauges are left out rather than stale.
      serverApp.log.warn({ err }, 'metrics: could not read worker_jobs')
      dbUp.set(0)
      queueDepth.reset()
      oldestDue.reset()
      depthByPriority.reset()
      unrunnable.reset()
      return
    }
    dbUp.set(1)
    unrunnable.set(waiting)
    const totals: Record<State, number> = { pending: 0, running: 0, succeeded: 0, failed: 0 }
    let due = 0
    let oldest = 0
    const bands = { negative: 0, zero: 0, positive: 0 }
    for (const row of rows) {
      bands.negative += row.dueBelow
      bands.zero += row.dueZero
      bands.positive += row.dueAbove
      for (const state of STATES) {
        totals[state] += row[state]
        jobsByType.set({ type: row.type, state }, row[state])
      }
      due += row.due
      oldest = Math.max(oldest, row.oldestDueAgeSeconds ?? 0)
    }
    for (const state of STATES) jobs.set({ state }, totals[state])
    queueDepth.set(due)
    oldestDue.set(oldest)
    for (const [priority, n] of Object.entries(bands)) depthByPriority.set({ priority }, n)
  }

  // Concurrent scrapes share one query (and cannot interleave their resets and sets).
  let inflight: Promise<string> | null = null
  return {
    contentType: registry.contentType,
    render() {
      inflight ??= (async () => {
        try {
          await refreshJobGauges()
          return await registry.metrics()
        } finally {
          inflight = null
        }
      })()
      return inflight
    },
  }
}
