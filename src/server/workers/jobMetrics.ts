/**
 * Event metrics of the job system, counted where the events happen: a child counts the outcomes it
 * recorded, the pickup latency of what it claimed, its claim errors and the chain lag its watchChain saw;
 * the manager counts its rescues. A child sends what it counted to its manager with each status report
 * (ipc.ts, every STATUS_INTERVAL_MS), never a message per job; the manager adds it into prom-client
 * counters and histograms (jobMetricsTotals.ts), which therefore survive a child's restart. A child
 * that is SIGKILLed loses what it counted since its last report (at most one interval's worth).
 *
 * This module is the child's side and has no dependency: prom-client is loaded by the manager only.
 */

/**
 * How a run (a claimed attempt) ended, a fixed set:
 * - succeeded, failed, cancelled: the child recorded that outcome (cancelled: the row's cancel was
 *   requested, whatever the handler did);
 * - interrupted: the child's own interruption (shutdown, lost lease deadline) put the row back to pending;
 * - rescued: the manager's rescuer took the row from a dead child or an expired lease (whatever it did
 *   with it then: released, failed or cancelled; see worker_lease_rescues_total).
 */
export const RUN_OUTCOMES = ['succeeded', 'failed', 'cancelled', 'interrupted', 'rescued'] as const
export type RunOutcome = (typeof RUN_OUTCOMES)[number]
/** The outcomes a child reports; `rescued` is counted by the manager. */
export type RecordedOutcome = Exclude<RunOutcome, 'rescued'>

/** The `type` label of a type this server does not register: a label never comes from user input. */
export const UNREGISTERED_TYPE = 'unregistered'

/** The `type` label of a job type: itself when this server registers it, else UNREGISTERED_TYPE. */
export function typeLabel(registry: Readonly<Record<string, unknown>>, type: string): string {
  return Object.hasOwn(registry, type) ? type : UNREGISTERED_TYPE
}

/**
 * How one RPC request to one endpoint ended: answered, answered with an error (the node's refusal of a
 * range counts here), rate limited (HTTP 429 or the provider's words), or not answered at all
 * (connection refused, HTTP error, timeout).
 */
export const RPC_OUTCOMES = ['ok', 'rpc_error', 'rate_limited', 'unreachable'] as const
export type RpcOutcome = (typeof RPC_OUTCOMES)[number]

/** Pickup latency buckets, in seconds: from a NOTIFY-driven pickup (a few ms) to a backlog of minutes. */
export const PICKUP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300] as const
/** Run time buckets, in seconds: from a no-op to the longest timeouts. */
export const RUN_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600] as const

/** Observations of one histogram series: `counts[i]` fall in bucket i (not cumulative); the last is +Inf. */
export interface HistogramDelta {
  counts: number[]
  sum: number
}

/** What a child sends: increments since its previous report (the chain lag is a last value). */
export interface JobMetricsDelta {
  /** [type, outcome, count] */
  runs: [string, RecordedOutcome, number][]
  pickup: Record<string, HistogramDelta>
  runTime: Record<string, HistogramDelta>
  claimErrors: number
  /** chain id → head − cursor in blocks, as last seen. */
  chainLag: Record<string, number>
  /** [chain id ("" when not configured), endpoint index in the chain's rpcUrls, outcome, count] */
  rpc?: [string, number, RpcOutcome, number][]
}

function bucketOf(bounds: readonly number[], value: number): number {
  for (let i = 0; i < bounds.length; i++) if (value <= bounds[i]!) return i
  return bounds.length
}

function observeInto(into: Map<string, HistogramDelta>, bounds: readonly number[], type: string, seconds: number): void {
  let h = into.get(type)
  if (!h) {
    h = { counts: new Array(bounds.length + 1).fill(0), sum: 0 }
    into.set(type, h)
  }
  h.counts[bucketOf(bounds, seconds)]!++
  h.sum += seconds
}

/**
 * Accumulates a process's events until `take()` hands them over (and starts afresh). Every ServerApp has
 * one (serverApp.metrics): in a child the worker loop and watchChain write to it and child.ts sends it
 * with the status report; in the main process /metrics drains it at each scrape.
 */
export class JobMetricsRecorder {
  private runs = new Map<string, number>()
  private pickup = new Map<string, HistogramDelta>()
  private runTime = new Map<string, HistogramDelta>()
  private claimErrors = 0
  private chainLag = new Map<string, number>()
  private rpc = new Map<string, number>()
  private dirty = false

  /** A run's outcome was written (after the write confirmed it); `runMs` is the handler's duration. */
  runEnded(type: string, outcome: RecordedOutcome, runMs: number | undefined): void {
    const key = `${outcome}\u0000${type}`
    this.runs.set(key, (this.runs.get(key) ?? 0) + 1)
    if (runMs !== undefined) observeInto(this.runTime, RUN_BUCKETS, type, Math.max(0, runMs) / 1000)
    this.dirty = true
  }

  /** A claimed job is about to start, `latencyMs` after it became runnable. */
  pickedUp(type: string, latencyMs: number): void {
    observeInto(this.pickup, PICKUP_BUCKETS, type, Math.max(0, latencyMs) / 1000)
    this.dirty = true
  }

  claimFailed(): void {
    this.claimErrors++
    this.dirty = true
  }

  /** watchChain knows the chain head and its cursor: the lag is head − cursor, in blocks. */
  chainLagSeen(chainId: number, blocks: bigint | number): void {
    this.chainLag.set(String(chainId), Number(blocks))
    this.dirty = true
  }

  /** An RPC request to endpoint `endpoint` (index into the chain's rpcUrls) ended. */
  rpcRequestEnded(chainId: number | undefined, endpoint: number, outcome: RpcOutcome): void {
    const key = `${chainId ?? ''}\u0000${endpoint}\u0000${outcome}`
    this.rpc.set(key, (this.rpc.get(key) ?? 0) + 1)
    this.dirty = true
  }

  /** Everything counted since the last call, or null when nothing was. */
  take(): JobMetricsDelta | null {
    if (!this.dirty) return null
    const delta: JobMetricsDelta = {
      runs: [...this.runs].map(([key, n]) => {
        const [outcome, type] = key.split('\u0000') as [RecordedOutcome, string]
        return [type, outcome, n]
      }),
      pickup: Object.fromEntries(this.pickup),
      runTime: Object.fromEntries(this.runTime),
      claimErrors: this.claimErrors,
      chainLag: Object.fromEntries(this.chainLag),
      rpc: [...this.rpc].map(([key, n]) => {
        const [chainId, endpoint, outcome] = key.split('\u0000') as [string, string, RpcOutcome]
        return [chainId, Number(endpoint), outcome, n]
      }),
    }
    this.runs = new Map()
    this.pickup = new Map()
    this.runTime = new Map()
    this.claimErrors = 0
    this.chainLag = new Map()
    this.rpc = new Map()
    this.dirty = false
    return delta
  }
}

/**
 * When a claimed job became runnable: its due time, or its insert when it was submitted already due (a
 * due time in the past, e.g. a backfill, would otherwise count the time before the job existed).
 * Both come from the database's clock, as `started` does.
 */
export function pickupLatencyMs(job: { due: Date; createdAt: Date; started: Date | null }): number | null {
  if (!job.started) return null
  return job.started.getTime() - Math.max(job.due.getTime(), job.createdAt.getTime())
}
