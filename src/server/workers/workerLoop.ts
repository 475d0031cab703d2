import type { WorkerJob } from '../db/schema'
import type { Logger } from '../log'
import type { ServerApp } from '../serverApp'
import { FinishBatcher } from './finishBatcher'
import { claimJobs, extendLeases, nextDueTime } from './queue/claim'
import { type RunningJob, runJob } from './runJob'

export interface WorkerLoopOptions {
  workerId: string
  concurrency: number
  pollIntervalMs: number
  leaseMs: number
}

/** The channel the insert trigger notifies (see drizzle/0001_notify_trigger.sql). */
export const JOBS_CHANNEL = 'worker_jobs'

/**
 * The claim loop of one worker process:
 *   wait for a reason to look (NOTIFY, the next due time, a freed slot while work is queued, the poll timer)
 *   → claim up to the free slots → start each job → record outcomes in batches.
 * It never holds a transaction while a handler runs, and never claims more than it has slots for.
 */
export class WorkerLoop {
  private readonly running = new Map<number, RunningJob>()
  private readonly finisher: FinishBatcher
  private stopping = false
  private wakeup: (() => void) | null = null
  private woken = false
  /** True when the last claim filled every slot: more work is probably waiting. */
  private backlog = false
  private wakeScheduled = false
  private recheckDue = true
  private dueTimer: ReturnType<typeof setTimeout> | null = null
  private dueAt = Number.POSITIVE_INFINITY
  private timers: ReturnType<typeof setInterval>[] = []
  private unlisten: (() => Promise<void>) | null = null
  private done: Promise<void> | null = null
  /** Last time the leases were confirmed; past the lease the jobs may already run elsewhere. */
  private leaseConfirmedAt = Date.now()

  constructor(
    private readonly serverApp: ServerApp,
    private readonly log: Logger,
    private readonly opts: WorkerLoopOptions,
  ) {
    this.finisher = new FinishBatcher(serverApp.db, opts.workerId, log, () => {
      if (this.backlog) this.wake()
    })
  }

  get runningJobs(): number {
    return this.running.size
  }

  async start(): Promise<void> {
    const listener = await this.serverApp.dbHandle.client.listen(
      JOBS_CHANNEL,
      (payload) => this.onNotify(payload),
      // (Re)connected: notifications may have been missed meanwhile, so look now.
      () => this.lookAround(),
    )
    this.unlisten = () => listener.unlisten()
    this.timers.push(setInterval(() => this.lookAround(), this.opts.pollIntervalMs))
    this.timers.push(setInterval(() => void this.heartbeat(), Math.max(250, Math.floor(this.opts.leaseMs / 3))))
    this.done = this.loop()
  }

  /** Stops claiming, lets running jobs finish and their outcomes be written, then releases the listener. */
  async drain(): Promise<void> {
    this.stopping = true
    this.wake()
    await this.done
    while (this.running.size > 0) await new Promise<void>((r) => this.onIdle.push(r))
    await this.finisher.drained()
    for (const t of this.timers) clearInterval(t)
    if (this.dueTimer) clearTimeout(this.dueTimer)
    await this.unlisten?.().catch(() => {})
  }

  /** Aborts every running job (forced shutdown); their outcomes are still recorded as failures. */
  abortAll(reason: string): void {
    for (const r of this.running.values()) r.abort(new Error(reason))
  }

  private onIdle: (() => void)[] = []

  private onNotify(payload: string): void {
    const due = Number(payload)
    if (!Number.isFinite(due) || due <= Date.now()) this.wake()
    else this.wakeAt(due)
  }

  /** Sets a timer for a future due time, keeping only the earliest. */
  private wakeAt(due: number): void {
    if (due >= this.dueAt) return
    if (this.dueTimer) clearTimeout(this.dueTimer)
    this.dueAt = due
    this.dueTimer = setTimeout(
      () => {
        this.dueAt = Number.POSITIVE_INFINITY
        this.dueTimer = null
        this.wake()
      },
      Math.max(0, due - Date.now()),
    )
  }

  /**
   * A wake that also re-reads the next due time. Only the poll and a (re)connect need it: every insert,
   * future-dated ones included, announces its due time through NOTIFY, so a NOTIFY-driven claim can skip
   * that query (one query per pickup instead of two).
   */
  private lookAround(): void {
    this.recheckDue = true
    this.wake()
  }

  private wake(): void {
    this.woken = true
    const w = this.wakeup
    this.wakeup = null
    w?.()
  }

  private waitForWake(): Promise<void> {
    if (this.woken) return Promise.resolve()
    return new Promise((resolve) => {
      this.wakeup = resolve
    })
  }

  private async loop(): Promise<void> {
    while (!this.stopping) {
      // Back-pressure: while many outcomes wait to be written, claiming more would only grow that queue.
      const free = this.finisher.size >= this.opts.concurrency ? 0 : this.opts.concurrency - this.running.size
      if (free === 0) {
        this.woken = false
        await this.waitForWake()
        continue
      }
      this.woken = false
      let claimed: WorkerJob[]
      try {
        claimed = await claimJobs(this.serverApp.db, { workerId: this.opts.workerId, limit: free, leaseMs: this.opts.leaseMs })
      } catch (err) {
        this.log.error({ err }, 'claiming jobs failed')
        await this.sleep(Math.min(this.opts.pollIntervalMs, 1000))
        continue
      }
      // Jobs claimed while a drain began still run: they are ours, and the drain waits for them.
      for (const job of claimed) this.startJob(job)
      this.backlog = claimed.length === free
      if (this.backlog || this.woken) continue
      if (this.recheckDue) {
        this.recheckDue = false
        try {
          const next = await nextDueTime(this.serverApp.db)
          if (next) {
            if (next.getTime() <= Date.now()) continue
            this.wakeAt(next.getTime())
          }
        } catch (err) {
          this.recheckDue = true
          this.log.error({ err }, 'reading the next due time failed')
        }
      }
      await this.waitForWake()
    }
  }

  private startJob(job: WorkerJob): void {
    const { running, outcome: done } = runJob(this.serverApp, this.serverApp.registry, job, this.log)
    this.running.set(job.id, running)
    void done.then((outcome) => {
      this.running.delete(job.id)
      this.finisher.add(outcome)
      if (this.running.size === 0) for (const r of this.onIdle.splice(0)) r()
      // A freed slot only matters when work is waiting; deferred so that jobs finishing in the same
      // tick free their slots together and the next claim is one batch, not one row at a time.
      if (this.backlog && !this.wakeScheduled) {
        this.wakeScheduled = true
        setImmediate(() => {
          this.wakeScheduled = false
          this.wake()
        })
      }
    })
  }

  private async heartbeat(): Promise<void> {
    if (this.running.size === 0 && this.finisher.size === 0) {
      this.leaseConfirmedAt = Date.now()
      return
    }
    try {
      await extendLeases(this.serverApp.db, { workerId: this.opts.workerId, leaseMs: this.opts.leaseMs })
      this.leaseConfirmedAt = Date.now()
    } catch (err) {
      this.log.error({ err }, 'extending job leases failed')
      // Past the lease another worker may rescue and rerun these jobs: stop them here rather than run twice.
      if (Date.now() - this.leaseConfirmedAt > this.opts.leaseMs) this.abortAll('lease lost: heartbeat failed')
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((r) => setTimeout(r, ms))
  }
}
