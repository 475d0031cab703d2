import type { Logger } from '../log'
import type { JobMetricsRecorder } from './jobMetrics'
import { finishJobs, type Outcome, type Written } from './queue/finish'
import type { QueueDb } from './queueDb'

export interface ExpressOptions {
  /** Pause before a failed ordinary write is tried again. */
  retryDelayMs?: number
  /** Outcomes written in the express lane (those that free a concurrency slot). */
  urgent?: (outcome: Outcome) => boolean
  /**
   * How the express lane writes a batch, when not with finishJobs: the worker's hand-off, which claims the
   * freed slots' next jobs in the same transaction (workerLoop.ts). It must write every outcome or throw.
   */
  writeUrgent?: (batch: readonly Outcome[]) => Promise<Written>
}

/** One write lane: outcomes waiting for its next write, and the batch it is writing. */
interface Lane {
  pending: Outcome[]
  inFlight: readonly Outcome[]
  flushing: Promise<void> | null
}

/**
 * Collects outcomes and writes them in batches: everything that finished while the previous write was in
 * flight goes out in the next single statement, one write at a time per lane. A poison row cannot block a
 * batch (finishJobs splits it and fails that row alone); a write that fails on the connection keeps its
 * outcomes and is retried, while the heartbeat keeps their rows ours. Each outcome is counted in `metrics`
 * once its write is confirmed, as what its row became.
 *
 * Two lanes: outcomes that free a concurrency slot (`urgent`) have their own, so they never wait behind a
 * batch of hundreds of ordinary outcomes being written: a limit-1 type's next job can only start once its
 * previous job's outcome is in the row, and inside a no-op flood that wait was 5-12 ms per job. The lanes
 * write disjoint rows (one outcome per job), so their order does not matter; a failed urgent write hands
 * its outcomes to the ordinary lane, which owns the retries.
 */
export class FinishBatcher {
  private readonly lane: Lane = { pending: [], inFlight: [], flushing: null }
  private readonly express: Lane = { pending: [], inFlight: [], flushing: null }
  private idleWaiters: (() => void)[] = []
  /**
   * Since when writes have been failing (null while they succeed): /health reports a stuck worker. Owned by
   * the ordinary lane, which owns every retry: a successful express write must not hide ordinary outcomes
   * that cannot be written.
   */
  failingSince: number | null = null

  constructor(
    private readonly queue: QueueDb,
    private readonly workerId: string,
    private readonly log: Logger,
    private readonly metrics: JobMetricsRecorder,
    /**
     * Called after each write (and awaited), so a loop held back by unwritten outcomes can claim again, and
     * slots of concurrency-limited types the batch freed are refilled or announced (workerLoop.ts).
     */
    private readonly onWritten: (batch: readonly Outcome[]) => Promise<void> | void = () => {},
    private readonly opts: ExpressOptions = {},
  ) {
    this.retryDelayMs = opts.retryDelayMs ?? 500
  }

  private readonly retryDelayMs: number

  /** Outcomes not yet written (queued or being written). */
  get size(): number {
    return this.lane.pending.length + this.lane.inFlight.length + this.express.pending.length + this.express.inFlight.length
  }

  /**
   * Outcomes waiting for the next write, not counting the one in flight: the claim loop's back-pressure
   * reads this, so claiming goes on while a batch is being written (the two overlap).
   */
  get queued(): number {
    return this.lane.pending.length + this.express.pending.length
  }

  /** The jobs whose outcomes are not written yet: their rows are still ours, so their leases are renewed. */
  heldIds(): number[] {
    return [...this.lane.inFlight, ...this.lane.pending, ...this.express.inFlight, ...this.express.pending].map((o) => o.job.id)
  }

  add(outcome: Outcome): void {
    const lane = this.opts.urgent?.(outcome) ? this.express : this.lane
    lane.pending.push(outcome)
    this.kick(lane)
  }

  private kick(lane: Lane): void {
    // setImmediate, not a microtask: jobs that complete in the same tick join the same batch.
    if (!lane.flushing) lane.flushing = new Promise((resolve) => setImmediate(resolve)).then(() => this.flushLoop(lane))
  }

  /** Resolves when every outcome added so far is written. */
  drained(): Promise<void> {
    if (!this.lane.flushing && !this.express.flushing && this.size === 0) return Promise.resolve()
    return new Promise((resolve) => this.idleWaiters.push(resolve))
  }

  private async flushLoop(lane: Lane): Promise<void> {
    while (lane.pending.length > 0) {
      const batch = lane.pending
      lane.pending = []
      lane.inFlight = batch
      try {
        const written =
          lane === this.express && this.opts.writeUrgent
            ? await this.opts.writeUrgent(batch)
            : await this.queue.run((db) => finishJobs(db, this.workerId, batch))
        if (lane === this.lane) this.failingSince = null
        for (const o of batch) {
          const as = written.get(o.job.id)
          if (as) this.metrics.runEnded(o.job.type, as, o.runMs)
        }
        const lost = batch.length - written.size
        if (lost > 0) this.log.warn({ lost }, 'outcomes not recorded: jobs were rescued by another worker first')
        lane.inFlight = []
        await this.onWritten(batch)
      } catch (err) {
        this.log.error({ err, count: batch.length }, 'recording job outcomes failed; retrying')
        lane.inFlight = []
        if (lane === this.express) {
          // The ordinary lane owns retries (their back-off, and how long they have been failing); it takes
          // these first.
          this.lane.pending = batch.concat(this.lane.pending)
          this.kick(this.lane)
        } else {
          this.failingSince ??= Date.now()
          lane.pending = batch.concat(lane.pending)
          await new Promise((r) => setTimeout(r, this.retryDelayMs))
        }
      }
    }
    lane.flushing = null
    if (!this.lane.flushing && !this.express.flushing && this.size === 0) for (const w of this.idleWaiters.splice(0)) w()
  }
}
