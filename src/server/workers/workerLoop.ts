import type { SQL } from 'drizzle-orm'
import type { WorkerJob } from '../db/schema'
import type { Logger } from '../log'
import type { ServerApp } from '../serverApp'
import { FinishBatcher } from './finishBatcher'
import { pickupLatencyMs } from './jobMetrics'
import { claimJobs, extendLeases, nextLook, releaseUnknownClaims } from './queue/claim'
import { finishJobs, type Outcome, type Written } from './queue/finish'
import { finishAndClaimNext } from './queue/handoff'
import { dueHeads, type Head, otherHeadsBound, type Source } from './queue/heads'
import { announceFreedSlots, claimLimited, limitOf, nextLimitedDue, type TypeLimit } from './queue/limits'
import { CANCEL_CHANNEL, JOBS_CHANNEL } from './queue/notify'
import { isTransientDbError } from './queue/transient'
import type { QueueDb } from './queueDb'
import { JobCancelledError, JobInterruptedError, type RunningJob, runJob } from './runJob'

/** How long a cancel for a job not running here is kept, in case its claim's reply is still on the way. */
const EARLY_CANCEL_TTL_MS = 10_000

/** The shortest wait before a rate-limited claim looks again. */
const RATE_RETRY_FLOOR_MS = 5

export interface WorkerLoopOptions {
  workerId: string
  concurrency: number
  /**
   * Slots beyond `concurrency` for jobs at a priority below 0 only (built-in and admins' jobs): with every
   * ordinary slot busy (long user jobs), such a job still starts at once, not when a slot frees.
   */
  urgentSlots?: number
  pollIntervalMs: number
  leaseMs: number
  defaultTimeoutMs: number
  /**
   * The queue's own pool (claim, outcome writes, heartbeat): never shared with handler code, so a
   * handler holding connections (an advisory lock, a slow query) can never delay a lease renewal.
   */
  queueDb: QueueDb
  /** Wall clock, injectable for tests of the lease deadline. */
  now?: () => number
  /**
   * While idle (no backlog), claim this long after a NOTIFY for a due job instead of at once, so the
   * children of a server do not all claim the same new row together (child.ts, notifyAnswerDelay).
   */
  notifyAnswerDelayMs?: number
}

/** How soon to look again when a due row was locked by another transaction at claim time. */
const LOCKED_DUE_RETRY_MS = 100
/** A freed slot that could not be announced (the database was away) is announced again after this long. */
const ANNOUNCE_RETRY_MS = 1_000

/** What the child reports to its manager for /health. */
export interface WorkerHealth {
  runningJobs: number
  unwrittenOutcomes: number
  /** Set when the worker cannot do its work although it runs: /health then reports it as not ok. */
  problem: string | null
}

interface Held {
  running: RunningJob
  /** Local time at which the last confirmed claim or renewal of this row was sent: its lease runs from then. */
  leaseSentAt: number
  aborted: boolean
  /** Its cancel was requested and its signal fired (the run goes on until the handler ends). */
  cancelled: boolean
}

/**
 * The claim loop of one worker process:
 *   wait for a reason to look (NOTIFY, the next due time, a freed slot while work is queued, the poll timer)
 *   → claim up to the free slots → start each job → record outcomes in batches.
 * It never holds a transaction while a handler runs, and never claims more than it has slots for.
 *
 * Leases: the heartbeat renews exactly the rows this worker holds every lease/5. A separate deadline timer,
 * which never waits for a query, aborts any job whose lease was not confirmed for lease − lease/5: by
 * the time its row's lease expires and another server may rescue it, the job here has been told to stop.
 *
 * Cancels: cancelJob NOTIFYs CANCEL_CHANNEL with the job id; the child holding that job fires its
 * handler's signal (JobCancelledError). Each renewal also reports which held rows have cancelled_at set,
 * so a lost notification delays the abort by one renewal period at most. How the row is then recorded
 * (cancelled, with the handler's outcome) is decided in SQL by the finish statement, not here.
 */
export class WorkerLoop {
  private readonly running = new Map<number, Held>()
  private readonly finisher: FinishBatcher
  private readonly renewEveryMs: number
  private readonly now: () => number
  private stopping = false
  private wakeup: (() => void) | null = null
  private woken = false
  /** True when the last claim filled every slot: more work is probably waiting. */
  private backlog = false
  private wakeScheduled = false
  private recheckDue = true
  private dueTimer: ReturnType<typeof setTimeout> | null = null
  private dueAt = Number.POSITIVE_INFINITY
  private retryTimer: ReturnType<typeof setTimeout> | null = null
  private answerTimer: ReturnType<typeof setTimeout> | null = null
  private announceTimer: ReturnType<typeof setTimeout> | null = null
  /** Set once drain has finished: nothing may be sent on the queue any more. */
  private closed = false
  private timers: ReturnType<typeof setInterval>[] = []
  private unlisten: (() => Promise<void>) | null = null
  private done: Promise<void> | null = null
  private renewing = false
  /** A claim failed on the connection: it may have committed without us seeing its rows. */
  private unknownClaims = false
  private claimFailingSince: number | null = null
  /** The types this worker claims with the common claim, and those with a concurrency limit (limits.ts). */
  private readonly types: string[]
  private readonly limited: { type: string; limits: TypeLimit }[]
  private readonly limitedNames: string[]
  private readonly limitOfType: Map<string, TypeLimit>
  /**
   * The limited types whose last claim found nothing more they may start: they are skipped (each claim is a
   * transaction under the type's lock) until something can have changed, which always comes with a NOTIFY
   * (an insert, a freed slot, a release, a repaired key), a due or rate timer, or the poll (claimRound).
   */
  private readonly quiet = new Set<string>()
  /** Limited types whose slots this worker freed and will refill first (refillHere); the next round checks them. */
  private readonly freed = new Set<string>()
  /**
   * Bumped by every reason to ask the limited types again (a NOTIFY, a look around). A claim round quiets
   * types only if none came while it ran: its heads were read before, so they may miss that work.
   */
  private limitedNews = 0
  private rounds = 0
  private notifies = 0
  private onIdle: (() => void)[] = []
  /** Cancels that arrived for jobs not (yet) running here, by id, with when (see onCancel). */
  private readonly earlyCancels = new Map<number, number>()
  /** Set by abortAll: a job claimed from then on never runs, and goes back to pending as it was. */
  private abortedWith: string | null = null
  /** Limited types with a concurrency cap: a finished job of one frees a slot that jobs may be waiting for. */
  private readonly capped: Set<string>
  /**
   * Jobs of capped types that ended here and whose outcomes are on their way to the hand-off (handOff):
   * each keeps its slot reserved until then, so this loop does not fill it with other work first.
   */
  private readonly reservedSlots = new Set<number>()
  /** Hand-offs in flight, and the release of unknown claims waiting for them (exclusiveOfHandoffs). */
  private handoffsInFlight = 0
  private releasing = false
  private handoffsIdle: (() => void)[] = []
  /** Outcome batches whose hand-off settled the slots they freed: nothing to refill or announce. */
  private readonly settledBatches = new WeakSet<readonly Outcome[]>()
  /** Each capped type's hand-off bound (otherHeadsBound), built once: a hand-off runs once per job. */
  private readonly headBounds = new Map<string, SQL | undefined>()

  constructor(
    private readonly serverApp: ServerApp,
    private readonly log: Logger,
    private readonly opts: WorkerLoopOptions,
  ) {
    this.now = opts.now ?? Date.now
    this.renewEveryMs = Math.max(100, Math.floor(opts.leaseMs / 5))
    this.limited = Object.values(serverApp.registry).flatMap((def) => {
      const limits = limitOf(def)
      return limits ? [{ type: def.type, limits }] : []
    })
    this.limitedNames = this.limited.map((l) => l.type)
    this.limitOfType = new Map(this.limited.map((l) => [l.type, l.limits]))
    const limitedSet = new Set(this.limitedNames)
    this.types = Object.keys(serverApp.registry).filter((t) => !limitedSet.has(t))
    // A finished job frees a slot only under a concurrency cap; a rate's window moves on by the clock alone.
    const capped = new Set(this.limited.filter((l) => l.limits.concurrency !== null || l.limits.perKey !== null).map((l) => l.type))
    this.capped = capped
    for (const t of capped) this.headBounds.set(t, otherHeadsBound(this.types, this.limitedNames.filter((n) => n !== t)) ?? undefined)
    this.finisher = new FinishBatcher(
      opts.queueDb,
      opts.workerId,
      log,
      serverApp.metrics,
      async (batch) => {
        if (this.backlog) this.wake()
        if (this.settledBatches.has(batch)) return
        // A limited job's outcome frees a slot that jobs on any server may be waiting for.
        const freed = batch.filter((o) => capped.has(o.job.type)).map((o) => o.job.type)
        if (freed.length > 0 && !this.refillHere(freed)) await this.announceFreed()
      },
      { urgent: (o) => capped.has(o.job.type), writeUrgent: (batch) => this.handOff(batch) },
    )
  }

  /** Slots free for this loop's claims: not running a job, and not reserved for a hand-off. */
  private freeSlots(): number {
    return this.opts.concurrency - this.running.size - this.reservedSlots.size
  }

  /**
   * Writes the outcomes of capped jobs that ended here and claims the type's next jobs into the slots
   * they free, in one transaction (queue/handoff.ts): a limit-1 type runs back to back on this worker,
   * without waiting for this loop's round in flight or telling every other worker. Falls back to a plain
   * write when the batch is not one type's plain finishes, or while a drain, an abort or the release of
   * unknown claims is under way; the slots then go to the loop as before (the FinishBatcher's onWritten).
   *
   * Only the loop claims otherwise, and releaseUnknownClaims relies on knowing every claim in flight: a
   * hand-off is one too, so a release waits for those in flight and none starts meanwhile
   * (exclusiveOfHandoffs). A hand-off that fails may have committed: its claim counts as unknown.
   */
  private async handOff(batch: readonly Outcome[]): Promise<Written> {
    const q = this.opts.queueDb
    const workerId = this.opts.workerId
    const reserved = batch.filter((o) => this.reservedSlots.has(o.job.id)).map((o) => o.job.id)
    const unreserve = () => {
      for (const id of reserved) this.reservedSlots.delete(id)
      if (this.backlog) this.wake()
    }
    const type = batch[0]!.job.type
    const limits = this.limitOfType.get(type)
    // Not while a claim's fate is unknown either: the loop releases its rows only when it has a free slot,
    // and hand-offs would keep every slot full for as long as the type has work.
    const may =
      reserved.length > 0 &&
      limits &&
      batch.every((o) => o.job.type === type) &&
      !this.stopping &&
      this.abortedWith === null &&
      !this.releasing &&
      !this.unknownClaims
    if (!may) {
      unreserve()
      return q.run((db) => finishJobs(db, workerId, batch))
    }
    const claim = { workerId, leaseMs: this.opts.leaseMs }
    const headBound = this.headBounds.get(type)
    this.handoffsInFlight++
    const sentAt = this.now()
    try {
      const h = await q.run((db) =>
        finishAndClaimNext(db, { ...claim, limit: reserved.length, types: [type], type, limits, headBound, outcomes: batch }),
      )
      if (h === null) {
        unreserve()
        return await q.run((db) => finishJobs(db, workerId, batch))
      }
      // Into the reserved slots: the jobs run before the reservations go, so the count never overshoots.
      this.startAll(h.jobs, sentAt)
      // Aborted meanwhile: startJob ran none of them, and the drain's last release returns their rows.
      if (this.abortedWith !== null && h.jobs.length > 0) this.unknownClaims = true
      unreserve()
      if (h.retryInMs !== null) this.wakeAt(Date.now() + Math.max(h.retryInMs, RATE_RETRY_FLOOR_MS))
      if (h.settled) this.settledBatches.add(batch)
      return h.written
    } catch (err) {
      this.unknownClaims = true
      this.serverApp.metrics.claimFailed()
      unreserve()
      // The loop releases what the claim may have taken before its next claim: let it look now.
      this.wake()
      throw err
    } finally {
      this.handoffsInFlight--
      if (this.handoffsInFlight === 0) for (const r of this.handoffsIdle.splice(0)) r()
    }
  }

  /** Runs `release` with no hand-off in flight and none starting until it is done (see handOff). */
  private async exclusiveOfHandoffs<T>(release: () => Promise<T>): Promise<T> {
    this.releasing = true
    try {
      while (this.handoffsInFlight > 0) await new Promise<void>((r) => this.handoffsIdle.push(r))
      return await release()
    } finally {
      this.releasing = false
    }
  }

  /**
   * Outcomes of limited types were written: their slots are free. Returns false when every worker must be
   * told now instead (the caller NOTIFYs). This loop refills them first when it can (it has a free slot: the one just
   * freed, unless outcomes pile up): telling every worker of every server costs each of them a heads read
   * and a claim under the type's lock, once per job of a limit-1 type, and all but one take nothing (a
   * fifth of a no-op flood's throughput beside such a type). After that round, the others are told only if
   * the type may still have work it could start (claimRound, `refilled`).
   */
  private refillHere(types: string[]): boolean {
    const free = this.freeSlots()
    // Not while claims fail either: the loop is in a back-off sleep that no wake shortens.
    if (this.stopping || free <= 0 || this.finisher.queued >= this.opts.concurrency || this.claimFailingSince !== null) return false
    for (const t of types) {
      this.freed.add(t)
      this.quiet.delete(t)
    }
    this.wake()
    return true
  }

  /** Cancels held for jobs not running here yet (diagnostics and tests). */
  get earlyCancelCount(): number {
    return this.earlyCancels.size
  }

  /** Claim rounds run so far (diagnostics and tests: "the loop has looked since"). */
  get claimRounds(): number {
    return this.rounds
  }

  /** Notifications of the jobs channel received so far (diagnostics and tests). */
  get notifyCount(): number {
    return this.notifies
  }

  /** Whether the loop is waiting for a reason to look (diagnostics and tests). */
  get parked(): boolean {
    return this.wakeup !== null
  }

  get runningJobs(): number {
    return this.running.size
  }

  health(): WorkerHealth {
    const now = this.now()
    let problem: string | null = null
    const since = (t: number | null) => (t === null ? 0 : now - t)
    if (since(this.finisher.failingSince) > this.opts.leaseMs) problem = `outcomes unwritten for ${since(this.finisher.failingSince)} ms`
    else if (since(this.claimFailingSince) > this.opts.leaseMs) problem = `claims failing for ${since(this.claimFailingSince)} ms`
    return { runningJobs: this.running.size, unwrittenOutcomes: this.finisher.size, problem }
  }

  async start(): Promise<void> {
    const client = this.serverApp.dbHandle.client
    const listener = await this.untilReachable(() =>
      client.listen(
        JOBS_CHANNEL,
        (payload) => this.onNotify(payload),
        // (Re)connected: notifications may have been missed meanwhile, so look now.
        () => this.lookAround(),
      ),
    )
    // Same LISTEN connection (postgres.js shares one for every channel). A notification lost while it
    // reconnects is covered by the renewals, which report cancelled rows too.
    const cancels = await this.untilReachable(() => client.listen(CANCEL_CHANNEL, (payload) => this.onCancel(payload)))
    this.unlisten = async () => {
      await Promise.all([listener.unlisten(), cancels.unlisten()])
    }
    this.timers.push(setInterval(() => this.lookAround(), this.opts.pollIntervalMs))
    this.timers.push(setInterval(() => void this.renewLeases(), this.renewEveryMs))
    this.timers.push(setInterval(() => this.enforceLeaseDeadline(), Math.max(50, Math.floor(this.renewEveryMs / 2))))
    this.done = this.loop()
  }

  /** Stops claiming, lets running jobs finish and their outcomes be written, then releases the listener. */
  async drain(): Promise<void> {
    this.stopping = true
    this.wake()
    await this.done
    // A hand-off in flight when the drain began may start jobs as its write ends: wait for those too.
    do {
      while (this.running.size > 0) await new Promise<void>((r) => this.onIdle.push(r))
      await this.finisher.drained()
    } while (this.running.size > 0)
    // Rows a hand-off claimed that never ran (an abort came first: handOff marks them unknown), or a claim
    // whose reply was lost, once the loop had ended (its own end released what an abort before it left):
    // nothing is in flight now, so what this worker holds is exactly what it knows.
    if (this.unknownClaims) await this.releaseNeverRun()
    for (const t of this.timers) clearInterval(t)
    if (this.dueTimer) clearTimeout(this.dueTimer)
    if (this.retryTimer) clearTimeout(this.retryTimer)
    if (this.answerTimer) clearTimeout(this.answerTimer)
    this.closed = true
    if (this.announceTimer) clearTimeout(this.announceTimer)
    await this.unlisten?.().catch(() => {})
  }

  /**
   * Aborts every running job (forced shutdown): each handler's signal fires, and the jobs are recorded as
   * interrupted, so they go back to pending instead of failing.
   */
  abortAll(reason: string): void {
    // A claim may be in flight right now (a NOTIFY came just before): the jobs it returns must not run
    // either, or they would outlive the abort (an orphan would then be killed mid-run by its deadline).
    this.abortedWith = reason
    this.stopping = true
    this.wake()
    for (const h of this.running.values()) this.abortHeld(h, reason)
  }

  private abortHeld(h: Held, reason: string): void {
    if (h.aborted) return
    h.aborted = true
    h.running.abort(new JobInterruptedError(reason))
  }

  /** Fires the signal of a held job whose cancel was requested; the run ends when its handler does. */
  private cancelHeld(h: Held): void {
    if (h.cancelled || h.aborted) return
    h.cancelled = true
    this.log.info({ jobId: h.running.job.id }, 'job cancel requested; aborting its signal')
    h.running.cancel(new JobCancelledError())
  }

  private onCancel(payload: string): void {
    const id = Number(payload)
    const h = this.running.get(id)
    if (h) this.cancelHeld(h)
    else {
      // The NOTIFY comes on the LISTEN connection, the claim's reply on the queue's: a cancel of a job whose
      // claim has committed can arrive before this worker has started it. Remembered briefly, it is applied
      // when the job starts (otherwise it would wait for the next lease renewal).
      const now = Date.now()
      for (const [k, at] of this.earlyCancels) if (now - at > EARLY_CANCEL_TTL_MS) this.earlyCancels.delete(k)
      if (this.earlyCancels.size < 10_000) this.earlyCancels.set(id, now)
    }
  }

  private onNotify(payload: string): void {
    this.notifies++
    this.quiet.clear()
    this.limitedNews++
    const due = Number(payload)
    if (Number.isFinite(due) && due > Date.now()) this.wakeAt(due)
    else if (this.backlog || !this.opts.notifyAnswerDelayMs) this.wake()
    else this.answerTimer ??= setTimeout(() => {
      this.answerTimer = null
      this.wake()
    }, this.opts.notifyAnswerDelayMs)
  }

  /**
   * Sets a timer for a future due time, keeping only the earliest. When it fires, the loop re-reads the
   * next due time, so the jobs due after it get their own timer instead of waiting for the poll.
   */
  private wakeAt(due: number): void {
    if (due >= this.dueAt) return
    if (this.dueTimer) clearTimeout(this.dueTimer)
    this.dueAt = due
    this.dueTimer = setTimeout(
      () => {
        this.dueAt = Number.POSITIVE_INFINITY
        this.dueTimer = null
        this.lookAround()
      },
      Math.max(0, due - Date.now()),
    )
  }

  /**
   * A wake that also re-reads the next due time: the poll, a (re)connect and a fired due timer need it.
   * Every insert announces its due time through NOTIFY, so a NOTIFY-driven claim can skip that query
   * (one query per pickup instead of two).
   */
  private lookAround(): void {
    this.quiet.clear()
    this.limitedNews++
    this.recheckDue = true
    this.wake()
  }

  private lookAgainSoon(): void {
    if (this.retryTimer) return
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null
      this.lookAround()
    }, LOCKED_DUE_RETRY_MS)
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

  private heldIds(): number[] {
    return [...this.running.keys(), ...this.finisher.heldIds()]
  }

  private async loop(): Promise<void> {
    const q = this.opts.queueDb
    while (!this.stopping) {
      // Back-pressure: while many outcomes wait to be written, claiming more would only grow that queue.
      const pressed = this.finisher.queued >= this.opts.concurrency
      const free = pressed ? 0 : Math.max(0, this.freeSlots())
      const urgentFree = pressed ? 0 : this.freeSlots() + (this.opts.urgentSlots ?? 0)
      // Slots freed for this loop to refill, but the round in flight when they freed filled every slot:
      // the other workers must be told, or the jobs waiting for them wait for their poll.
      if (free === 0 && this.freed.size > 0) {
        this.freed.clear()
        await this.announceFreed()
        // Slots may have freed, and wakes come, while it was sent: read them again.
        continue
      }
      if (free === 0 && urgentFree > 0) {
        this.woken = false
        await this.claimUrgent(urgentFree)
        if (!this.woken) await this.waitForWake()
        continue
      }
      if (free === 0) {
        this.woken = false
        await this.waitForWake()
        continue
      }
      this.woken = false
      let claimed: number
      try {
        // No claim is in flight here (this loop is the only claimer): rows locked_by us that we don't
        // know can only be those of a claim whose reply was lost.
        if (this.unknownClaims) {
          this.unknownClaims = false
          const n = await this.exclusiveOfHandoffs(() => q.run((db) => releaseUnknownClaims(db, { workerId: this.opts.workerId, held: this.heldIds() })))
          if (n > 0) this.log.warn({ count: n }, 'returned to pending the rows of a claim whose reply was lost')
        }
        // Jobs claimed while a drain began still run: they are ours, and the drain waits for them.
        claimed = await this.claimRound(free, this.now())
        this.claimFailingSince = null
      } catch (err) {
        this.serverApp.metrics.claimFailed()
        this.unknownClaims = true
        this.claimFailingSince ??= this.now()
        this.log.error({ err }, 'claiming jobs failed')
        await this.sleep(Math.min(this.opts.pollIntervalMs, 1000))
        continue
      }
      this.backlog = claimed === free
      if (this.backlog || this.woken) continue
      if (this.recheckDue) {
        this.recheckDue = false
        try {
          const look = await q.run((db) => nextLook(db, this.types))
          if (look.nextDue) this.wakeAt(look.nextDue.getTime())
          // Limited rows that are due but held back by their limit are woken by the slot's NOTIFY, not here.
          const limitedDue = await q.run((db) => nextLimitedDue(db, this.limited.map((l) => l.type)))
          if (limitedDue) this.wakeAt(limitedDue.getTime())
          // A due row we could not take is locked by another claim: look again soon, and re-read then.
          if (look.lockedDue) this.lookAgainSoon()
        } catch (err) {
          this.recheckDue = true
          this.log.error({ err }, 'reading the next due time failed')
        }
      }
      await this.waitForWake()
    }
    if (this.abortedWith !== null) await this.releaseNeverRun()
    // Slots freed for this loop to refill, which it will not now: the other workers must know.
    if (this.freed.size > 0) {
      this.freed.clear()
      await this.announceFreed()
    }
  }

  /**
   * One claim round for `free` slots. Without limited types, or while every one of them is quiet (known to
   * have nothing it may start until some news), it is the common claim alone: one statement.
   *
   * Otherwise the slots go to the most urgent work first, whichever claim holds it. Taken in a fixed order
   * (the common claim first), a steady backlog of ordinary jobs kept every slot busy and a limited type's
   * job, however urgent, never started. So one statement first reads the head of each claim still asked
   * (its most urgent due row: dueHeads), and the claims run in the order of their heads (priority, due
   * time, id: the order the jobs would have in one queue), each with the slots still free. Each claim takes
   * only rows up to the next head's priority, so its own backlog cannot jump ahead of that head; if slots
   * are left after every claim has run once, those with rows past their bound run again without it.
   *
   * A limited type becomes quiet when it has no due row, or when its claim took fewer rows than asked and
   * had nothing it may start past its bound (its limits hold the rest back): asking it again before
   * something changes would cost a transaction under its lock for nothing, once per round of a flood. Every change that can give it
   * work comes with a NOTIFY (an insert, a freed slot, a repaired key) or a timer (a due time, a rate's
   * window), and those clear the quiet set; a round that saw such news while it ran quiets nothing, since
   * its heads were read before.
   */
  private async claimRound(free: number, sentAt: number): Promise<number> {
    this.rounds++
    // Most servers have no limited type: their round is the one statement, with nothing allocated.
    if (this.limited.length === 0) return this.startAll(await this.claimCommon({ limit: free }), sentAt)
    // Slots freed before this round: settled by it, or announced to every worker after it.
    const refilled = [...this.freed]
    this.freed.clear()
    const asked = this.limitedNames.filter((t) => !this.quiet.has(t))
    if (asked.length === 0) return this.startAll(await this.claimCommon({ limit: free }), sentAt)
    const news = this.limitedNews
    try {
      return await this.claimInOrder(free, asked, news, refilled, sentAt)
    } catch (err) {
      // The round failed: the slots it was to refill are told to every worker instead.
      if (refilled.length > 0) await this.announceFreed()
      throw err
    }
  }

  /** Starts the jobs of a claim (whose statement was sent at `sentAt`); their count. */
  private startAll(jobs: WorkerJob[], sentAt: number): number {
    for (const job of jobs) this.startJob(job, sentAt)
    return jobs.length
  }

  /**
   * The ordered claims of a round. Each claim's jobs start as soon as it returns, not when the round ends:
   * a limit-1 type's next job, claimed first, waited for the common claim after it (4-6 ms in a flood).
   */
  private async claimInOrder(free: number, asked: string[], news: number, refilled: string[], sentAt: number): Promise<number> {
    const q = this.opts.queueDb
    const claim = { workerId: this.opts.workerId, leaseMs: this.opts.leaseMs }
    const heads = await q.run((db) => dueHeads(db, this.types, asked))
    const order: { source: Source; head: Head }[] = []
    if (heads.common && this.types.length > 0) order.push({ source: { kind: 'common' }, head: heads.common })
    for (const [type, head] of heads.limited) order.push({ source: { kind: 'limited', type }, head })
    order.sort((a, b) => a.head.priority - b.head.priority || a.head.dueMs - b.head.dueMs || a.head.id - b.head.id)
    const quietNow = asked.filter((t) => !heads.limited.has(t))

    let claimed = 0
    // Limited types a rate held back: not settled for the other workers, which keep their own rate timers.
    const rateHeld: string[] = []
    /** Runs one source's claim; true when it may have rows past `maxPriority` (worth a second pass). */
    const take = async (source: Source, maxPriority: number | undefined): Promise<boolean> => {
      const left = free - claimed
      const bound = maxPriority === undefined ? {} : { maxPriority }
      if (source.kind === 'common') {
        claimed += this.startAll(await this.claimCommon({ ...bound, limit: left }), sentAt)
        return maxPriority !== undefined
      }
      const limits = this.limitOfType.get(source.type)!
      const got = await q.run((db) => claimLimited(db, { ...claim, ...bound, limit: left, types: [source.type], type: source.type, limits }))
      claimed += this.startAll(got.jobs, sentAt)
      // A rate held jobs back: no NOTIFY comes when its window moves on, so a timer looks again then
      // (a delay measured on the database's clock, so this server's own clock does not matter).
      if (got.retryInMs !== null) {
        rateHeld.push(source.type)
        this.wakeAt(Date.now() + Math.max(got.retryInMs, RATE_RETRY_FLOOR_MS))
      }
      if (got.jobs.length === left) return got.moreBeyondBound
      // Fewer than asked and nothing it may start past the bound: its limits hold the rest (or it has none).
      if (!got.moreBeyondBound) quietNow.push(source.type)
      return got.moreBeyondBound
    }
    // Each claim is bounded by the next head's priority, so no source's less urgent backlog takes slots
    // ahead of a more urgent head; the ones that may have more past their bound run again, unbounded, in
    // the same order, with the slots left.
    const again: Source[] = []
    for (const [i, { source }] of order.entries()) {
      if (claimed >= free) break
      if (await take(source, order[i + 1]?.head.priority)) again.push(source)
    }
    for (const source of again) {
      if (claimed >= free) break
      await take(source, undefined)
    }
    // A type whose slot was freed while the round ran is left to the next round, which its wake brings.
    if (news === this.limitedNews) for (const t of quietNow) if (!this.freed.has(t)) this.quiet.add(t)
    // A refilled type that went quiet took all its limits allow: nobody else could start more of it now.
    // One that did not (the slots went to more urgent work, or news came) may have work for other workers.
    if (refilled.some((t) => !this.quiet.has(t) || rateHeld.includes(t))) await this.announceFreed()
    return claimed
  }

  /** The common claim (types without a limit) for `limit` slots, up to `maxPriority` if given. */
  private claimCommon(opts: { limit: number; maxPriority?: number }): Promise<WorkerJob[]> {
    if (this.types.length === 0) return Promise.resolve([])
    return this.opts.queueDb.run((db) => claimJobs(db, { workerId: this.opts.workerId, leaseMs: this.opts.leaseMs, types: this.types, ...opts }))
  }

  /**
   * NOTIFYs every worker that limited slots freed. One that fails is tried again until it goes through:
   * the jobs waiting for the slot on other workers (and servers) would otherwise wait for their poll.
   */
  private async announceFreed(): Promise<void> {
    try {
      await this.opts.queueDb.run((db) => announceFreedSlots(db))
    } catch (err) {
      this.log.warn({ err, retryInMs: ANNOUNCE_RETRY_MS }, 'could not announce a freed concurrency slot; retrying')
      if (this.closed) return
      this.announceTimer ??= setTimeout(() => {
        this.announceTimer = null
        void this.announceFreed()
      }, ANNOUNCE_RETRY_MS)
    }
  }

  /**
   * With every ordinary slot busy: claims only jobs at a priority below 0, into the urgent slots. Limited
   * types are left to their own claim. A failure is logged and left to the next wake (the ordinary
   * claim's error handling owns the unknown-claim release, and runs as soon as a slot frees).
   */
  private async claimUrgent(limit: number): Promise<void> {
    if (this.types.length === 0) return
    const sentAt = this.now()
    try {
      for (const job of await this.claimCommon({ limit, maxPriority: -1 })) this.startJob(job, sentAt)
      this.claimFailingSince = null
    } catch (err) {
      this.unknownClaims = true
      this.claimFailingSince ??= this.now()
      this.serverApp.metrics.claimFailed()
      this.log.error({ err }, 'claiming urgent jobs failed')
      await this.sleep(Math.min(this.opts.pollIntervalMs, 1000))
    }
  }

  /**
   * A child started while the database is away (restarting, cut off) waits for it, saying so, instead of
   * exiting: its manager would only respawn it into the same outage. Other errors still fail the start.
   */
  private async untilReachable<T>(connect: () => Promise<T>): Promise<T> {
    for (let delay = 250; ; delay = Math.min(delay * 2, 2000)) {
      try {
        return await connect()
      } catch (err) {
        if (!isTransientDbError(err) || this.stopping) throw err
        this.log.warn({ err, retryInMs: delay }, 'database unreachable at worker start; retrying')
        await new Promise((r) => setTimeout(r, delay))
      }
    }
  }

  /** Returns the rows claimed after abortAll (never started, attempt unchanged); the lease covers a failure. */
  private async releaseNeverRun(): Promise<void> {
    try {
      const n = await this.exclusiveOfHandoffs(() =>
        this.opts.queueDb.run((db) => releaseUnknownClaims(db, { workerId: this.opts.workerId, held: this.heldIds() })),
      )
      this.unknownClaims = false
      if (n > 0) this.log.info({ count: n }, 'returned to pending, without running them, the jobs claimed after the abort or by a claim whose reply was lost')
    } catch (err) {
      this.log.warn({ err }, 'could not return the jobs claimed but never run here; their lease will expire')
    }
  }

  private startJob(job: WorkerJob, leaseSentAt: number): void {
    // Claimed after abortAll: its handler is never called; the loop returns the row when it ends.
    if (this.abortedWith !== null) return
    const { running, outcome: done } = runJob(this.serverApp, this.serverApp.registry, job, this.log, {
      defaultTimeoutMs: this.opts.defaultTimeoutMs,
    })
    const held: Held = { running, leaseSentAt, aborted: false, cancelled: false }
    this.running.set(job.id, held)
    const latency = pickupLatencyMs(job)
    if (latency !== null) this.serverApp.metrics.pickedUp(job.type, latency)
    const cancelledAt = this.earlyCancels.get(job.id)
    if (cancelledAt !== undefined) {
      this.earlyCancels.delete(job.id)
      if (Date.now() - cancelledAt <= EARLY_CANCEL_TTL_MS) this.cancelHeld(held)
    }
    void done.then((outcome) => {
      this.running.delete(job.id)
      // Its slot waits for the hand-off of its outcome (handOff), which may fill it with the type's next job.
      if (this.capped.has(job.type) && !this.stopping && this.abortedWith === null) this.reservedSlots.add(job.id)
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

  /** Renews the leases of exactly the rows this worker holds; aborts the jobs whose rows it lost. */
  private async renewLeases(): Promise<void> {
    if (this.renewing) return // the previous renewal is still waiting: the deadline timer covers that
    const ids = this.heldIds()
    if (ids.length === 0) return
    this.renewing = true
    const sentAt = this.now()
    try {
      const { held, cancelled } = await this.opts.queueDb.run((db) =>
        extendLeases(db, { workerId: this.opts.workerId, leaseMs: this.opts.leaseMs, ids }),
      )
      for (const id of ids) {
        const h = this.running.get(id)
        if (!h) continue
        if (held.has(id)) h.leaseSentAt = Math.max(h.leaseSentAt, sentAt)
        else this.abortHeld(h, 'lease lost: the job was rescued by another worker')
        if (cancelled.has(id)) this.cancelHeld(h)
      }
    } catch (err) {
      this.log.error({ err }, 'extending job leases failed')
    } finally {
      this.renewing = false
    }
  }

  /**
   * Runs on its own timer and never waits for the database: a job whose lease was not confirmed for
   * lease − lease/5 is aborted, so it has stopped (if its handler honours the signal) before the row's
   * lease runs out and another server may run it again.
   */
  enforceLeaseDeadline(): void {
    const limit = this.opts.leaseMs - this.renewEveryMs
    const now = this.now()
    for (const h of this.running.values()) {
      if (!h.aborted && now - h.leaseSentAt > limit) {
        this.log.error({ jobId: h.running.job.id, unconfirmedMs: now - h.leaseSentAt }, 'lease not renewed in time; aborting the job')
        this.abortHeld(h, `lease lost: not renewed for ${now - h.leaseSentAt} ms`)
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((r) => setTimeout(r, ms))
  }
}
