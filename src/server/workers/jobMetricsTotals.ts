import { Counter, Gauge, Histogram, type LabelValues, type Metric } from 'prom-client'
import type { Config } from '../config'
import { redactUrl } from '../redact'
import type { JobRegistry } from './jobs/types'
import {
  type HistogramDelta,
  type JobMetricsDelta,
  PICKUP_BUCKETS,
  RPC_OUTCOMES,
  RUN_BUCKETS,
  RUN_OUTCOMES,
  type RunOutcome,
  typeLabel,
} from './jobMetrics'

/** What the RPC metrics need of the config: the chains and their request settings. */
export type ChainMetricsConfig = Pick<Config, 'chains' | 'CHAIN_RPC_TIMEOUT_MS' | 'CHAIN_RPC_RETRIES'>

/** The outcomes a child may report: `rescued` is the manager's own. */
const REPORTED = new Set<string>(RUN_OUTCOMES.filter((o) => o !== 'rescued'))

/** Why the rescuer took a row: its child exited, or its lease expired (a silent server). */
export type RescueCause = 'worker_exited' | 'lease_expired'
/** What the rescuer did with it (queue/rescue.ts). */
export type RescueAction = 'released' | 'failed' | 'cancelled'

/**
 * A prom-client Histogram that also takes observations already bucketed by a child (jobMetrics.ts), so
 * the manager adds a child's report in one step per series instead of one observe() per job.
 * prom-client has no public call for that: this writes its per-series state ({ labels, bucketValues keyed
 * by upper bound, sum, count } in `hashMap`, prom-client 15). tests/workers/jobMetrics.test.ts checks
 * that a merge renders exactly like the same observations made one by one, so an upgrade that changes
 * that state fails there.
 */
class MergeableHistogram<T extends string> extends Histogram<T> {
  constructor(
    config: ConstructorParameters<typeof Histogram<T>>[0],
    private readonly bounds: readonly number[],
  ) {
    super({ ...config, buckets: [...bounds] })
  }

  merge(labels: LabelValues<T>, delta: HistogramDelta): void {
    type Series = { labels: LabelValues<T>; bucketValues: Record<number, number>; sum: number; count: number }
    const find = () =>
      Object.values((this as unknown as { hashMap: Record<string, Series> }).hashMap).find((s) =>
        Object.entries(labels).every(([k, v]) => s.labels[k as T] === v),
      )
    if (!find()) this.zero(labels)
    const series = find()!
    let count = 0
    for (let i = 0; i < delta.counts.length; i++) {
      const n = delta.counts[i]!
      count += n
      // The last count is above every bound: prom-client keeps no bucket for it (+Inf is the total count).
      if (i < this.bounds.length) series.bucketValues[this.bounds[i]!]! += n
    }
    series.count += count
    series.sum += delta.sum
  }
}

/**
 * The manager's side of the event metrics: prom-client counters and histograms that add up what the
 * children report, and what the manager counts itself (rescues). They live as long as the manager, so
 * they are monotonic across child restarts; /metrics registers them in the server's Registry.
 *
 * Labels: `type` is a type this server registers or "unregistered" (a report is checked again here, so
 * no label value ever comes from a job row's text), `outcome`, `cause` and `action` are fixed sets.
 */
export class JobMetricsTotals {
  readonly runs = new Counter({
    name: 'worker_job_runs_total',
    help: 'Job runs (claimed attempts) that ended, by type and outcome: succeeded, failed, cancelled, interrupted (back to pending by its own worker), rescued (taken back from a dead worker or an expired lease)',
    labelNames: ['type', 'outcome'],
    registers: [],
  })
  readonly pickup = new MergeableHistogram(
    {
      name: 'worker_job_pickup_latency_seconds',
      help: 'Time from a job becoming runnable (max of due and created_at) to its claim (started), by type',
      labelNames: ['type'],
      registers: [],
    },
    PICKUP_BUCKETS,
  )
  readonly runTime = new MergeableHistogram(
    {
      name: 'worker_job_run_seconds',
      help: "Handler run time of the runs whose outcome a worker recorded, by type (a rescued run's time is unknown)",
      labelNames: ['type'],
      registers: [],
    },
    RUN_BUCKETS,
  )
  readonly claimErrors = new Counter({
    name: 'worker_claim_errors_total',
    help: "Claims that failed in a worker's loop (the database refused or was unreachable); the loop retries",
    registers: [],
  })
  readonly rescues = new Counter({
    name: 'worker_lease_rescues_total',
    help: 'Running rows taken back by this server\'s rescuer, by cause (worker_exited, lease_expired) and action (released back to pending, failed, cancelled)',
    labelNames: ['cause', 'action'],
    registers: [],
  })
  readonly chainLag = new Gauge({
    name: 'worker_chain_lag_blocks',
    help: 'Chain head minus the watchChain cursor, in blocks, as the last watchChain run on this server saw it',
    labelNames: ['chain_id'],
    registers: [],
  })

  readonly rpcRequests = new Counter({
    name: 'worker_chain_rpc_requests_total',
    help: 'RPC requests to each configured endpoint (scheme://host[:port] only), by chain and outcome: ok, rpc_error (the node answered with an error), rate_limited, unreachable (no answer, HTTP error or timeout; the next endpoint is tried)',
    labelNames: ['chain_id', 'endpoint', 'outcome'],
    registers: [],
  })
  readonly rpcSettings = new Gauge({
    name: 'worker_chain_rpc_settings',
    help: 'How this server talks to each chain: endpoints (RPC URLs configured), timeout_seconds (per attempt, CHAIN_RPC_TIMEOUT_MS), retries (of the whole endpoint list, CHAIN_RPC_RETRIES)',
    labelNames: ['chain_id', 'setting'],
    registers: [],
  })

  constructor(
    private readonly registry: JobRegistry,
    private readonly chains: ChainMetricsConfig = { chains: [], CHAIN_RPC_TIMEOUT_MS: 0, CHAIN_RPC_RETRIES: 0 },
  ) {
    for (const chain of chains.chains) {
      const chainId = String(chain.id ?? '')
      this.rpcSettings.set({ chain_id: chainId, setting: 'endpoints' }, chain.rpcUrls.length)
      this.rpcSettings.set({ chain_id: chainId, setting: 'timeout_seconds' }, chains.CHAIN_RPC_TIMEOUT_MS / 1000)
      this.rpcSettings.set({ chain_id: chainId, setting: 'retries' }, chains.CHAIN_RPC_RETRIES)
    }
    // Every series a dashboard may rate() exists from the start, at 0.
    for (const type of Object.keys(registry)) for (const outcome of RUN_OUTCOMES) this.runs.inc({ type, outcome }, 0)
    this.claimErrors.inc(0)
    for (const cause of ['worker_exited', 'lease_expired'] as const) {
      for (const action of ['released', 'failed', 'cancelled'] as const) this.rescues.inc({ cause, action }, 0)
    }
  }

  /** Every metric here, for a Registry to register. */
  get all(): Metric<string>[] {
    return [this.runs, this.pickup, this.runTime, this.claimErrors, this.rescues, this.chainLag, this.rpcRequests, this.rpcSettings]
  }

  typeLabel(type: string): string {
    return typeLabel(this.registry, type)
  }

  /** Adds a child's report (or the main process's own recorder). */
  merge(delta: JobMetricsDelta): void {
    for (const [type, outcome, n] of delta.runs) {
      if (REPORTED.has(outcome) && n > 0) this.runs.inc({ type: this.typeLabel(type), outcome }, n)
    }
    for (const [histogram, bounds, series] of [
      [this.pickup, PICKUP_BUCKETS, delta.pickup],
      [this.runTime, RUN_BUCKETS, delta.runTime],
    ] as const) {
      for (const [type, h] of Object.entries(series)) {
        if (h.counts.length === bounds.length + 1) histogram.merge({ type: this.typeLabel(type) }, h)
      }
    }
    if (delta.claimErrors > 0) this.claimErrors.inc(delta.claimErrors)
    for (const [chainId, blocks] of Object.entries(delta.chainLag)) {
      if (/^\d{1,12}$/.test(chainId) && Number.isFinite(blocks)) this.chainLag.set({ chain_id: chainId }, blocks)
    }
    for (const [chainId, endpoint, outcome, n] of delta.rpc ?? []) {
      // The endpoint label is the configured URL's redacted host, looked up here: a report carries only its index.
      const chain = this.chains.chains.find((c) => String(c.id ?? '') === chainId)
      const url = chain?.rpcUrls[endpoint]
      if (url && RPC_OUTCOMES.includes(outcome) && n > 0) this.rpcRequests.inc({ chain_id: chainId, endpoint: redactUrl(url), outcome }, n)
    }
  }

  /** One row taken back by the rescuer: its run ended as `rescued`. */
  rescued(type: string, cause: RescueCause, action: RescueAction): void {
    const outcome: RunOutcome = 'rescued'
    this.runs.inc({ type: this.typeLabel(type), outcome })
    this.rescues.inc({ cause, action })
  }
}
