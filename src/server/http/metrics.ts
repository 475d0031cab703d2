import { Counter, Gauge, Registry } from 'prom-client'
import { haltedChains } from '../chain/cursorStore'
import { queueDepth, type TypeDepth } from '../workers/queue/depth'
import { limitOf } from '../workers/queue/limits'
import { typeLabel } from '../workers/jobMetrics'
import type { ServerApp } from '../serverApp'
import type { WorkerManager } from '../workers/manager'

/**
 * GET /metrics: Prometheus text, cheap to scrape at any table size.
 * - Queue gauges (worker_queue_*) are computed at scrape time from the table (the truth, shared by every
 *   instance) in one statement that reads only the pending and running rows, through their partial
 *   indexes (workers/queue/depth.ts): never the finished ones.
 * - Event metrics (worker_job_runs_total, the pickup and run time histograms, claim errors, rescues, the
 *   chain lag) are counted where the events happen and added up by this server's WorkerManager
 *   (workers/jobMetricsTotals.ts): they are this server's own, and a cluster's figure is their sum.
 * - Worker gauges come from this server's WorkerManager.
 * Each server gets its own Registry, so several servers in one process (tests) never clash.
 *
 * Access: with METRICS_TOKEN set, a scrape must send `Authorization: Bearer <METRICS_TOKEN>` (401 otherwise;
 * checked in http/app.ts). Without it the endpoint is open, and boot logs that once: keep it unreachable
 * from outside then (HOST on loopback, or a proxy that does not route /metrics).
 *
 * What it may show: counts only. Labels are fixed sets (`state`, `outcome`, `cause`, `action`, `scope`,
 * `priority`), `chain_id` (the configured chain) and `type` (a job type this server registers, or
 * "unregistered"); never a user id, a wallet, a job id, a host name or a pid, and never an error text. A label whose values come
 * from users would also let them grow the series without bound.
 */

/** The queue states of worker_queue_jobs: what waits or runs (finished rows are counted as events instead). */
const QUEUE_STATES = ['pending_due', 'pending_future', 'running'] as const

const QUERY_TIMEOUT_MS = 2000

export interface Metrics {
  contentType: string
  render(): Promise<string>
}

export function createMetrics(serverApp: ServerApp, manager: WorkerManager | null): Metrics {
  const registry = new Registry()
  const registers = [registry]
  const jobs = new Gauge({
    name: 'worker_queue_jobs',
    help: 'Jobs waiting or running, cluster-wide: pending_due (due, waiting for a worker), pending_future (due later), running',
    labelNames: ['state'],
    registers,
  })
  const jobsByType = new Gauge({ name: 'worker_queue_jobs_by_type', help: 'worker_queue_jobs by job type', labelNames: ['type', 'state'], registers })
  const depth = new Gauge({ name: 'worker_queue_depth', help: 'Pending jobs whose due time has passed (the same as worker_queue_jobs{state="pending_due"})', registers })
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
  // The registry's concurrency limits (queue/limits.ts): with worker_queue_jobs_by_type{state="running"} beside
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
  // From chain_cursors (one row per chain), so every server shows it whichever one halted the chain.
  const chainHalted = new Gauge({
    name: 'worker_chain_halted',
    help: 'Per configured chain: 1 when watchChain has stopped it rather than skip blocks (a reorg deeper than CHAIN_MAX_REORG_DEPTH, or a cursor block the chain no longer has; see chain_cursors.halted_reason), else 0',
    labelNames: ['chain_id'],
    registers,
  })

  if (manager) {
    for (const metric of manager.metrics.all) registry.registerMetric(metric)
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
    let rows: TypeDepth[]
    try {
      rows = await Promise.race([
        queueDepth(serverApp.db),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no answer within ${QUERY_TIMEOUT_MS} ms`)), QUERY_TIMEOUT_MS)),
      ])
    } catch (err) {
      // Still answer with the worker gauges and the event metrics; the queue gauges are left out rather than stale.
      serverApp.log.warn({ err }, 'metrics: could not read worker_jobs')
      dbUp.set(0)
      depth.reset()
      oldestDue.reset()
      depthByPriority.reset()
      unrunnable.reset()
      return
    }
    dbUp.set(1)
    const totals: Record<(typeof QUEUE_STATES)[number], number> = { pending_due: 0, pending_future: 0, running: 0 }
    let oldest = 0
    let waiting = 0
    const bands = { negative: 0, zero: 0, positive: 0 }
    // Types this server does not register (a newer server's, a psql typo) share one label: the label's
    // values never come from a row's text.
    const byType = new Map<string, Record<(typeof QUEUE_STATES)[number], number>>()
    for (const row of rows) {
      const byState = { pending_due: row.pendingDue, pending_future: row.pendingFuture, running: row.running }
      const type = typeLabel(serverApp.registry, row.type)
      const sums = byType.get(type) ?? { pending_due: 0, pending_future: 0, running: 0 }
      for (const state of QUEUE_STATES) {
        totals[state] += byState[state]
        sums[state] += byState[state]
      }
      byType.set(type, sums)
      bands.negative += row.dueBelow
      bands.zero += row.dueZero
      bands.positive += row.dueAbove
      oldest = Math.max(oldest, row.oldestDueAgeSeconds ?? 0)
      if (!row.live) waiting += row.pendingDue
    }
    for (const [type, sums] of byType) for (const state of QUEUE_STATES) jobsByType.set({ type, state }, sums[state])
    for (const state of QUEUE_STATES) jobs.set({ state }, totals[state])
    depth.set(totals.pending_due)
    oldestDue.set(oldest)
    unrunnable.set(waiting)
    for (const [priority, n] of Object.entries(bands)) depthByPriority.set({ priority }, n)
    const halted = new Set((await haltedChains(serverApp.db).catch(() => [])).map((r) => r.chainId))
    // The shorthand's chain id may be unknown here (CHAIN_ID unset): its row, once halted, still shows.
    const ids = new Set([...serverApp.config.chains.flatMap((c) => (c.id === undefined ? [] : [c.id])), ...halted])
    for (const id of ids) chainHalted.set({ chain_id: String(id) }, halted.has(id) ? 1 : 0)
  }

  // Concurrent scrapes share one query (and cannot interleave their resets and sets).
  let inflight: Promise<string> | null = null
  return {
    contentType: registry.contentType,
    render() {
      inflight ??= (async () => {
        try {
          // Events counted in this process itself (a handler run here, e.g. watchChain called directly).
          const own = serverApp.metrics.take()
          if (own && manager) manager.metrics.merge(own)
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
