import type { Logger } from '../log'
import type { JobMetricsRecorder } from './jobMetrics'
import { finishJobs, type Outcome } from './queue/finish'
import type { QueueDb } from './queueDb'

/**
 * Collects outcomes and writes them in batches: everything that finished while the previous write was in
 * flight goes out in the next single statement. One write at a time keeps the order of a worker's writes
 * simple. A poison row cannot block a batch (finishJobs splits it and fails that row alone); a write that
 * fails on the connection keeps its outcomes and is retried, while the heartbeat keeps their rows ours.
 * Each outcome is counted in `metrics` once its write is confirmed, as what its row became.
 */
export class FinishBatcher {
  private pending: Outcome[] = []
  private inFlight: readonly Outcome[] = []
  private flushing: Promise<void> | null = null
  private idleWaiters: (() => void)[] = []
  /** Since when writes have been failing (null while they succeed): /health reports a stuck worker. */
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
    private readonly retryDelayMs = 500,
  ) {}

  /** Outcomes not yet written (queued or being written). */
  get size(): number {
    return this.pending.length + this.inFlight.length
  }

  /**
   * Outcomes waiting for the next write, not counting the one in flight: the claim loop's back-pressure
   * reads this, so claiming goes on while a batch is being written (the two overlap).
   */
  get queued(): number {
    return this.pending.length
  }

  /** The jobs whose outcomes are not written yet: their rows are still ours, so their leases are renewed. */
  heldIds(): number[] {
    return [...this.inFlight, ...this.pending].map((o) => o.job.id)
  }

  add(outcome: Outcome): void {
    this.pending.push(outcome)
    // setImmediate, not a microtask: jobs that complete in the same tick join the same batch.
    if (!this.flushing) this.flushing = new Promise((resolve) => setImmediate(resolve)).then(() => this.flushLoop())
  }

  /** Resolves when every outcome added so far is written. */
  drained(): Promise<void> {
    if (!this.flushing && this.size === 0) return Promise.resolve()
    return new Promise((resolve) => this.idleWaiters.push(resolve))
  }

  private async flushLoop(): Promise<void> {
    while (this.pending.length > 0) {
      const batch = this.pending
      this.pending = []
      this.inFlight = batch
      try {
        const written = await this.queue.run((db) => finishJobs(db, this.workerId, batch))
        this.failingSince = null
        for (const o of batch) {
          const as = written.get(o.job.id)
          if (as) this.metrics.runEnded(o.job.type, as, o.runMs)
        }
        const lost = batch.length - written.size
        if (lost > 0) this.log.warn({ lost }, 'outcomes not recorded: jobs were rescued by another worker first')
        this.inFlight = []
        await this.onWritten(batch)
      } catch (err) {
        this.failingSince ??= Date.now()
        this.log.error({ err, count: batch.length }, 'recording job outcomes failed; retrying')
        this.inFlight = []
        this.pending = batch.concat(this.pending)
        await new Promise((r) => setTimeout(r, this.retryDelayMs))
      }
    }
    this.flushing = null
    for (const w of this.idleWaiters.splice(0)) w()
  }
}
