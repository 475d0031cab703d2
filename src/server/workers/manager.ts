import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import type { Subprocess } from 'bun'
import { and, inArray, isNotNull, isNull, sql } from 'drizzle-orm'
import type { Transaction } from '../db/client'
import { type WorkerJob, workerJobs } from '../db/schema'
import type { Logger } from '../log'
import { createSubmitter, type JobSubmitter, type ServerApp } from '../serverApp'
import { nextCronRun } from './cron'
import type { ToChild, ToManager } from './ipc'
import { failAbandonedJobs } from './queue/finish'
import { seedCronJob } from './queue/seed'
import type { SubmitJobInput } from './queue/submit'

const CHILD_ENTRY = new URL('./child.ts', import.meta.url).pathname

/**
 * JavaScriptCore sizes its garbage-collected heap from the machine's RAM, so on a large server a busy
 * child lets garbage pile up past 100 MB before collecting. forceRAMSize makes it size the heap as if
 * the machine had WORKER_HEAP_HINT_MB: measured here (100,000 no-op jobs), a busy child's RSS went from
 * about 105 MB to about 75 MB at 80, for some 5-10% of throughput; lower hints cost more CPU in GC.
 */
function childEnv(heapHintMb: number): Record<string, string | undefined> {
  if (heapHintMb === 0) return process.env
  return { ...process.env, BUN_JSC_forceRAMSize: String(heapHintMb * 1_000_000) }
}

/** What /health shows for each child process. */
export interface WorkerStatus {
  id: string
  pid: number | null
  /** The process runs and has reported ready (listening for jobs). */
  alive: boolean
  restarts: number
  runningJobs: number
  startedAt: string | null
}

interface Slot {
  index: number
  workerId: string
  proc: Subprocess<'ignore', 'inherit', 'inherit'> | null
  /** The process is running. */
  running: boolean
  /** It has connected and listens for jobs. */
  ready: boolean
  onReady: () => void
  restarts: number
  consecutiveCrashes: number
  startedAt: Date | null
  restartTimer: ReturnType<typeof setTimeout> | null
  exited: Promise<void>
}

export interface WorkerManagerOptions {
  /** Modules whose exported `jobs` arrays extend the registry, in the manager and in every child. */
  jobModules?: readonly string[]
}

/**
 * The parent side of the worker system: seeds the built-in cron jobs, spawns WORKER_COUNT Bun child
 * processes, restarts a dead one with capped exponential backoff, fails the jobs a dead child held the
 * moment it exits, rescues expired leases, and drains the children on stop.
 */
export class WorkerManager implements JobSubmitter {
  private readonly slots: Slot[] = []
  private readonly log: Logger
  private stopping = false
  private rescueTimer: ReturnType<typeof setInterval> | null = null
  private readonly jobModules: string[]
  private readonly submitter: JobSubmitter

  constructor(
    private readonly serverApp: ServerApp,
    opts: WorkerManagerOptions = {},
  ) {
    this.log = serverApp.log.child({ component: 'workerManager' })
    this.jobModules = [...(opts.jobModules ?? [])]
    this.submitter = createSubmitter(serverApp.db, serverApp.registry)
  }

  submitJob(input: SubmitJobInput, opts?: { tx?: Transaction }): Promise<WorkerJob> {
    return this.submitter.submitJob(input, opts)
  }

  submitJobs(inputs: readonly SubmitJobInput[], opts?: { tx?: Transaction }): Promise<WorkerJob[]> {
    return this.submitter.submitJobs(inputs, opts)
  }

  get configuredCount(): number {
    return this.serverApp.config.WORKER_COUNT
  }

  async start(): Promise<void> {
    const { config } = this.serverApp
    await this.rescueExpiredLeases()
    await this.seedBuiltInJobs()
    for (let i = 0; i < config.WORKER_COUNT; i++) {
      const slot: Slot = {
        index: i,
        workerId: '',
        proc: null,
        running: false,
        ready: false,
        onReady: () => {},
        restarts: 0,
        consecutiveCrashes: 0,
        startedAt: null,
        restartTimer: null,
        exited: Promise.resolve(),
      }
      this.slots.push(slot)
    }
    // Boot is done when the children listen: a job inserted after "server ready" is picked up at once.
    await Promise.race([
      Promise.all(this.slots.map((slot) => new Promise<void>((resolve) => this.spawn(slot, resolve)))),
      new Promise((r) => setTimeout(r, 30_000)),
    ])
    // Any live server rescues jobs whose server died without a word (lease expired).
    const every = Math.max(1000, Math.floor(config.WORKER_LEASE_MS / 2))
    this.rescueTimer = setInterval(() => void this.rescueExpiredLeases(), every)
  }

  /** Drains every child (running jobs finish), waits up to WORKER_SHUTDOWN_TIMEOUT_MS, then kills the rest. */
  async stop(): Promise<void> {
    if (this.stopping) return
    this.stopping = true
    if (this.rescueTimer) clearInterval(this.rescueTimer)
    for (const s of this.slots) if (s.restartTimer) clearTimeout(s.restartTimer)
    const live = this.slots.filter((s) => s.running && s.proc)
    for (const s of live) this.sendTo(s, { type: 'drain' })
    const all = Promise.all(live.map((s) => s.exited))
    const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), this.serverApp.config.WORKER_SHUTDOWN_TIMEOUT_MS))
    if ((await Promise.race([all, timeout])) === 'timeout') {
      this.log.warn('workers did not drain in time; killing them')
      for (const s of live) if (s.running) s.proc?.kill('SIGKILL')
      await all
    }
  }

  /** Each child's state without asking the database (used when it is unreachable). */
  statusWithoutCounts(): WorkerStatus[] {
    return this.slots.map((s) => ({
      id: s.workerId,
      pid: s.proc?.pid ?? null,
      alive: s.running && s.ready,
      restarts: s.restarts,
      runningJobs: 0,
      startedAt: s.startedAt?.toISOString() ?? null,
    }))
  }

  /** Each child's state; running jobs are counted from the table, which is the truth. */
  async status(): Promise<WorkerStatus[]> {
    const ids = this.slots.map((s) => s.workerId).filter(Boolean)
    const counts = new Map<string, number>()
    if (ids.length > 0) {
      const rows = await this.serverApp.db
        .select({ lockedBy: workerJobs.lockedBy, n: sql<number>`count(*)::int` })
        .from(workerJobs)
        .where(and(isNotNull(workerJobs.started), isNull(workerJobs.finished), inArray(workerJobs.lockedBy, ids)))
        .groupBy(workerJobs.lockedBy)
      for (const r of rows) counts.set(r.lockedBy!, r.n)
    }
    return this.statusWithoutCounts().map((w) => ({ ...w, runningJobs: counts.get(w.id) ?? 0 }))
  }

  get aliveCount(): number {
    return this.slots.filter((s) => s.running && s.ready).length
  }

  private spawn(slot: Slot, onReady: () => void = () => {}): void {
    const { config } = this.serverApp
    // A fresh id per process: rows held by a dead child can never be mistaken for its successor's.
    slot.workerId = `${hostname()}/${process.pid}/w${slot.index}/${randomUUID().slice(0, 8)}`
    const workerId = slot.workerId
    const proc = Bun.spawn([process.execPath, CHILD_ENTRY], {
      env: childEnv(config.WORKER_HEAP_HINT_MB),
      stdio: ['ignore', 'inherit', 'inherit'],
      serialization: 'json',
      ipc: (msg: ToManager) => this.onMessage(slot, workerId, msg),
    })
    slot.proc = proc
    slot.running = true
    slot.ready = false
    slot.onReady = onReady
    slot.startedAt = new Date()
    slot.exited = proc.exited.then((code) => this.onExit(slot, workerId, code, proc.signalCode))
    this.sendTo(slot, { type: 'init', workerId, config, jobModules: this.jobModules })
    this.log.info({ workerId, pid: proc.pid }, 'worker spawned')
  }

  private sendTo(slot: Slot, msg: ToChild): void {
    try {
      slot.proc?.send(msg)
    } catch (err) {
      this.log.warn({ err, workerId: slot.workerId }, 'could not message worker')
    }
  }

  private onMessage(slot: Slot, workerId: string, msg: ToManager): void {
    if (msg.type === 'ready' && slot.workerId === workerId) {
      slot.ready = true
      slot.onReady()
      this.log.debug({ workerId }, 'worker ready')
    } else if (msg.type === 'fatal') this.log.error({ workerId, error: msg.error }, 'worker failed to start')
  }

  private async onExit(slot: Slot, workerId: string, code: number | null, signal: unknown): Promise<void> {
    slot.running = false
    slot.ready = false
    slot.onReady()
    const livedMs = Date.now() - (slot.startedAt?.getTime() ?? Date.now())
    const level = this.stopping && code === 0 ? 'info' : 'warn'
    this.log[level]({ workerId, code, signal, livedMs }, 'worker exited')
    // At once: whatever the child held is failed (and retried or rescheduled by the usual rules).
    try {
      const failed = await failAbandonedJobs(this.serverApp.db, { workerIds: [workerId] }, 'worker process exited')
      if (failed.length > 0) this.log.warn({ workerId, jobIds: failed.map((j) => j.id) }, 'failed the jobs of an exited worker')
    } catch (err) {
      this.log.error({ err, workerId }, 'could not fail the jobs of an exited worker; the lease rescuer will')
    }
    if (this.stopping) return
    slot.consecutiveCrashes = livedMs > 30_000 ? 1 : slot.consecutiveCrashes + 1
    const delay = Math.min(this.serverApp.config.WORKER_RESTART_MAX_BACKOFF_MS, 100 * 2 ** (slot.consecutiveCrashes - 1))
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = null
      if (this.stopping) return
      slot.restarts++
      this.spawn(slot)
    }, delay)
  }

  private async rescueExpiredLeases(): Promise<void> {
    try {
      const rescued = await failAbandonedJobs(this.serverApp.db, { leaseExpired: true }, 'lease expired: its worker stopped responding')
      if (rescued.length > 0) this.log.warn({ jobIds: rescued.map((j) => j.id) }, 'rescued jobs with expired leases')
    } catch (err) {
      this.log.error({ err }, 'lease rescue failed')
    }
  }

  /** Once per boot, by the manager: the built-in cron jobs (one pending row each) and deployMulticall3. */
  private async seedBuiltInJobs(): Promise<void> {
    const { config } = this.serverApp
    const now = new Date()
    const crons: [string, string | null][] = [
      ['removeOldWorkerJobs', config.CRON_REMOVE_OLD_WORKER_JOBS],
      ['watchChain', config.CRON_WATCH_CHAIN],
    ]
    for (const [type, schedule] of crons) {
      if (!schedule) continue
      const res = await seedCronJob(this.serverApp.db, {
        type,
        userId: 0,
        data: {},
        due: nextCronRun(schedule, now),
        cronSchedule: schedule,
        autoRescheduleOnFailure: false,
        autoRescheduleOnFailureDelay: 0,
        removeDelay: 7 * 24 * 3600,
        persistent: false,
        tag: type,
        attempt: 1,
        maxAttempts: 25,
        rescheduledFromJob: null,
      })
      this.log.info({ type, schedule, ...res }, 'cron job seeded')
    }
    if (config.DEPLOY_MULTICALL3_ON_BOOT) {
      const job = await this.submitJob({
        type: 'deployMulticall3',
        userId: 0,
        data: {},
        tag: 'deployMulticall3',
        autoRescheduleOnFailure: true,
        autoRescheduleOnFailureDelay: 60,
        maxAttempts: 5,
      })
      this.log.info({ jobId: job.id }, 'deployMulticall3 submitted')
    }
  }
}
