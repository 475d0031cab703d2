import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import type { Subprocess } from 'bun'
import { and, inArray, sql } from 'drizzle-orm'
import type { Transaction } from '../db/client'
import { type WorkerJob, workerJobs } from '../db/schema'
import type { Logger } from '../log'
import { createSubmitter, type JobSubmitter, type ServerApp } from '../serverApp'
import { STATUS_INTERVAL_MS, type ToChild, type ToManager } from './ipc'
import { JobMetricsTotals, type RescueCause } from './jobMetricsTotals'
import { type RescueTarget, rescueJobs } from './queue/rescue'
import { type BuiltInCron, chainJob, retireBuiltInSchedule, seedCronJob } from './queue/seed'
import { STATUS_WHERE } from './queue/states'
import { submitBuiltInJob } from './queue/submit'
import { reconcileLimitKeys } from './queue/limitKeys'
import { limitedTypes } from './queue/limits'
import { announceServer, retireServer } from './queue/servers'
import { failUnrunnableJobs } from './queue/unrunnable'
import type { WorkerHealth } from './workerLoop'
import type { SubmitJobInput } from './queue/submit'

const CHILD_ENTRY = new URL('./child.ts', import.meta.url).pathname

/**
 * How often Bun's own idle-collection timer may fire in a child. By default it fires every second
 * whenever the heap changed since the last tick, which in a child that runs jobs is always: JSC's GC log
 * (`BUN_JSC_logGC=1`) showed every child collecting about once a second, each pause 1-5 ms on this
 * 2-core machine: at one pickup every 6-7 ms (the latency benchmark) that is one pickup in 150, often
 * enough to set the pickup p99.
 * Collections triggered by allocation (the heap's budget, see WORKER_HEAP_HINT_MB) and JSC's own
 * activity timers still run, so memory stays bounded as before; this timer only adds idle collections.
 */
export const CHILD_GC_TIMER_MS = 30_000

/**
 * The environment of a worker child: the server's, plus two collector settings.
 *
 * JavaScriptCore sizes its garbage-collected heap from the machine's RAM, so on a large server a busy
 * child lets garbage pile up past 100 MB before collecting. forceRAMSize makes it size the heap as if
 * the machine had WORKER_HEAP_HINT_MB: measured here (100,000 no-op jobs), a busy child's RSS went from
 * about 105 MB to about 75 MB at 80, for some 5-10% of throughput; lower hints cost more CPU in GC.
 *
 * BUN_GC_TIMER_INTERVAL is CHILD_GC_TIMER_MS unless the operator set it, or BUN_GC_TIMER_DISABLE: theirs wins.
 */
export function childEnv(heapHintMb: number, env: Record<string, string | undefined> = process.env): Record<string, string | undefined> {
  const out = { ...env }
  if (heapHintMb > 0) out.BUN_JSC_forceRAMSize = String(heapHintMb * 1_000_000)
  if (env.BUN_GC_TIMER_INTERVAL === undefined && env.BUN_GC_TIMER_DISABLE === undefined) out.BUN_GC_TIMER_INTERVAL = String(CHILD_GC_TIMER_MS)
  return out
}

/** What /health shows for each child process. */
export interface WorkerStatus {
  id: string
  pid: number | null
  /** The process runs and has reported ready (listening for jobs). */
  alive: boolean
  /** Alive, reporting, and able to claim and record outcomes. */
  healthy: boolean
  /** Why it is not healthy, when it is alive. */
  problem: string | null
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
  /** Resets the restart backoff once the child has been ready for a moment. */
  healthyTimer: ReturnType<typeof setTimeout> | null
  exited: Promise<void>
  health: WorkerHealth | null
  reportedAt: number
}

/** A child that has been ready this long counts as a successful start: its next crash restarts it at once. */
const HEALTHY_AFTER_MS = 1000
const EXITED_REASON = 'interrupted: its worker process exited'

/** After the drain deadline, handlers get this long to honour their aborted signal before the kill. */
const ABORT_GRACE_MS = 3000
/** How often the manager refreshes worker_servers. */
const ANNOUNCE_EVERY_MS = 5000

/**
 * How often the lease sweep runs: a quarter of the lease, at most 3 s. A dead server's jobs are then
 * rescued at most lease + sweep after their last renewal (12.5 s with the default 10 s lease, inside the
 * promised 15 s), and an idle server spends 0.4 transactions a second on it instead of one.
 */
export const rescueSweepMs = (leaseMs: number) => Math.min(3000, Math.max(250, Math.floor(leaseMs / 4)))

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
  private announceTimer: ReturnType<typeof setInterval> | null = null
  private rescuing = false
  /** Children that exited while their jobs could not be rescued (the database away): retried at every sweep. */
  private readonly unrescued = new Set<string>()
  /** This server's row in worker_servers. */
  readonly serverId = `${hostname()}/${process.pid}/${randomUUID().slice(0, 8)}`
  private readonly jobModules: string[]
  private readonly submitter: JobSubmitter
  /** The event metrics of this server: what its children report, plus its own rescues (/metrics shows them). */
  readonly metrics: JobMetricsTotals

  constructor(
    private readonly serverApp: ServerApp,
    opts: WorkerManagerOptions = {},
  ) {
    this.log = serverApp.log.child({ component: 'workerManager' })
    this.jobModules = [...(opts.jobModules ?? [])]
    this.submitter = createSubmitter(serverApp.db, serverApp.registry)
    this.metrics = new JobMetricsTotals(serverApp.registry, serverApp.config)
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
    await this.announce()
    await this.rescue({ leaseExpired: true }, 'lease expired: its worker stopped responding')
    // After announce (the insert trigger now knows this server's limited types): rows written meanwhile
    // without their key, or of a type whose limit was removed, move to the claim their type needs now.
    // Each announce repeats the cheap part of this (rows written since, limits removed by a deploy), so a
    // failure here must not stop the boot.
    await reconcileLimitKeys(this.serverApp.db, this.serverApp.registry, { boot: true }).then(
      (keys) => this.logKeyRepair(keys),
      (err) => this.log.error({ err }, 'could not set the concurrency keys of pending rows at boot; the announces retry'),
    )
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
        healthyTimer: null,
        exited: Promise.resolve(),
        health: null,
        reportedAt: 0,
      }
      this.slots.push(slot)
    }
    // Boot is done when the children listen: a job inserted after "server ready" is picked up at once.
    await Promise.race([
      Promise.all(this.slots.map((slot) => new Promise<void>((resolve) => this.spawn(slot, resolve)))),
      new Promise((r) => setTimeout(r, 30_000)),
    ])
    // Any live server rescues jobs whose server died without a word, right after their lease expires: the
    // query walks the running-lease index, so sweeping often is cheap.
    this.rescueTimer = setInterval(() => void this.sweep(), rescueSweepMs(this.serverApp.config.WORKER_LEASE_MS))
    this.announceTimer = setInterval(() => void this.announce(), ANNOUNCE_EVERY_MS)
  }

  /**
   * Drains every child (running jobs finish) for up to WORKER_SHUTDOWN_TIMEOUT_MS; then fires every
   * handler's signal (their jobs go back to pending), waits ABORT_GRACE_MS, and kills what is left. The
   * jobs of a killed child are returned to pending by the rescue on its exit.
   */
  async stop(): Promise<void> {
    if (this.stopping) return
    this.stopping = true
    if (this.rescueTimer) clearInterval(this.rescueTimer)
    if (this.announceTimer) clearInterval(this.announceTimer)
    for (const s of this.slots) {
      if (s.restartTimer) clearTimeout(s.restartTimer)
      if (s.healthyTimer) clearTimeout(s.healthyTimer)
    }
    const live = this.slots.filter((s) => s.running && s.proc)
    for (const s of live) this.sendTo(s, { type: 'drain' })
    const all = Promise.all(live.map((s) => s.exited))
    const after = (ms: number) => new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms))
    if ((await Promise.race([all, after(this.serverApp.config.WORKER_SHUTDOWN_TIMEOUT_MS)])) === 'timeout') {
      this.log.warn('workers did not drain in time; aborting their jobs')
      for (const s of live) if (s.running) this.sendTo(s, { type: 'abort', reason: 'interrupted: the server is shutting down' })
      if ((await Promise.race([all, after(ABORT_GRACE_MS)])) === 'timeout') {
        this.log.warn('workers did not stop after the abort; killing them')
        for (const s of live) if (s.running) s.proc?.kill('SIGKILL')
        await all
      }
    }
    await retireServer(this.serverApp.db, this.serverId).catch((err) => this.log.warn({ err }, 'could not remove this server from worker_servers'))
  }

  /** Each child's state without asking the database (used when it is unreachable). */
  statusWithoutCounts(): WorkerStatus[] {
    return this.slots.map((s) => ({
      id: s.workerId,
      pid: s.proc?.pid ?? null,
      alive: s.running && s.ready,
      healthy: this.isHealthy(s),
      problem: this.problemOf(s),
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
        .where(and(STATUS_WHERE.RUNNING, inArray(workerJobs.lockedBy, ids)))
        .groupBy(workerJobs.lockedBy)
      for (const r of rows) counts.set(r.lockedBy!, r.n)
    }
    return this.statusWithoutCounts().map((w) => ({ ...w, runningJobs: counts.get(w.id) ?? 0 }))
  }

  get aliveCount(): number {
    return this.slots.filter((s) => s.running && s.ready).length
  }

  /** Children that are alive and doing their work: /health is ok only when every one is. */
  get healthyCount(): number {
    return this.slots.filter((s) => this.isHealthy(s)).length
  }

  private isHealthy(s: Slot): boolean {
    return s.running && s.ready && this.problemOf(s) === null
  }

  private problemOf(s: Slot): string | null {
    if (!s.running || !s.ready) return null
    // A child whose event loop is blocked, or that is wedged, stops reporting.
    const silentMs = Date.now() - s.reportedAt
    if (silentMs > 3 * STATUS_INTERVAL_MS + 1000) return `no status report for ${silentMs} ms`
    return s.health?.problem ?? null
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
    slot.health = null
    slot.startedAt = new Date()
    slot.exited = proc.exited.then((code) => this.onExit(slot, workerId, code, proc.signalCode))
    this.sendTo(slot, { type: 'init', workerId, index: slot.index, config, jobModules: this.jobModules })
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
    if (slot.workerId !== workerId) return
    if (msg.type === 'ready') {
      slot.ready = true
      slot.reportedAt = Date.now()
      slot.onReady()
      this.log.debug({ workerId }, 'worker ready')
      slot.healthyTimer = setTimeout(() => {
        slot.healthyTimer = null
        if (slot.workerId === workerId && slot.running) slot.consecutiveCrashes = 0
      }, HEALTHY_AFTER_MS)
    } else if (msg.type === 'status') {
      slot.health = msg.health
      slot.reportedAt = Date.now()
      if (msg.metrics) this.metrics.merge(msg.metrics)
    } else if (msg.type === 'fatal') this.log.error({ workerId, error: msg.error }, 'worker failed to start')
  }

  private async onExit(slot: Slot, workerId: string, code: number | null, signal: unknown): Promise<void> {
    slot.running = false
    slot.ready = false
    slot.onReady()
    if (slot.healthyTimer) clearTimeout(slot.healthyTimer)
    slot.healthyTimer = null
    const livedMs = Date.now() - (slot.startedAt?.getTime() ?? Date.now())
    const level = this.stopping && code === 0 ? 'info' : 'warn'
    this.log[level]({ workerId, code, signal, livedMs }, 'worker exited')
    // At once: the child is gone, so nothing runs its jobs any more; the rescuer returns them to pending.
    // With the database away it is retried at every sweep, not left to the lease expiry (up to a lease later).
    if (!(await this.rescue({ workerIds: [workerId] }, EXITED_REASON))) this.unrescued.add(workerId)
    if (this.stopping) return
    // consecutiveCrashes is reset once a child has been ready for HEALTHY_AFTER_MS, so a child killed now
    // and then comes back at once; only one that keeps failing to start backs off.
    slot.consecutiveCrashes++
    const backoff = slot.consecutiveCrashes <= 1 ? 0 : 100 * 2 ** (slot.consecutiveCrashes - 2)
    let delay = Math.min(this.serverApp.config.WORKER_RESTART_MAX_BACKOFF_MS, backoff)
    // Never sit with every slot empty for long: the last one comes back within a second.
    if (this.aliveCount === 0) delay = Math.min(delay, 1000)
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = null
      if (this.stopping) return
      slot.restarts++
      this.spawn(slot)
    }, delay)
  }

  /** Every second: the exited children whose rescue failed, then the expired leases of every server. */
  private async sweep(): Promise<void> {
    if (this.unrescued.size > 0) {
      const ids = [...this.unrescued]
      if (await this.rescue({ workerIds: ids }, EXITED_REASON)) for (const id of ids) this.unrescued.delete(id)
    }
    await this.rescue({ leaseExpired: true }, 'lease expired: its worker stopped responding')
  }

  /** False when the database refused it (the caller decides whether to try again). */
  private async rescue(target: RescueTarget, reason: string): Promise<boolean> {
    // One lease sweep at a time; an exited child's rescue always runs (it names its own rows).
    const sweep = 'leaseExpired' in target
    if (sweep && this.rescuing) return true
    if (sweep) this.rescuing = true
    try {
      const { released, failed, cancelled, typeOf } = await rescueJobs(this.serverApp.db, this.serverApp.registry, target, reason)
      const cause: RescueCause = sweep ? 'lease_expired' : 'worker_exited'
      for (const [action, ids] of [['released', released], ['failed', failed], ['cancelled', cancelled]] as const) {
        for (const id of ids) this.metrics.rescued(typeOf.get(id) ?? '', cause, action)
      }
      if (released.length > 0 || failed.length > 0 || cancelled.length > 0) this.log.warn({ reason, released, failed, cancelled }, 'rescued interrupted jobs')
      return true
    } catch (err) {
      this.log.error({ err, reason }, 'rescuing jobs failed; the next sweep retries')
      return false
    } finally {
      if (sweep) this.rescuing = false
    }
  }

  private logKeyRepair({ moved, failed }: { moved: number; failed: number[] }): void {
    if (moved > 0) this.log.info({ moved }, 'concurrency keys set or cleared on pending rows to match the registry')
    if (failed.length > 0) this.log.warn({ jobIds: failed }, 'failed jobs written without a concurrency key whose data gives none')
  }

  /** Refreshes this server's row in worker_servers, then fails jobs that no live server has known for long. */
  private async announce(): Promise<void> {
    const { db, registry, config } = this.serverApp
    try {
      // Its children as /health shows them, so an admin's workerStatus on any server sees every server's.
      const workers = await this.status().catch(() => this.statusWithoutCounts())
      // One transaction for both: an idle server's own load on the database is mostly these periodic statements.
      const { failed, keys } = await db.transaction(async (tx) => {
        await announceServer(tx, {
          id: this.serverId,
          hostname: hostname(),
          pid: process.pid,
          jobTypes: Object.keys(registry),
          limitedTypes: limitedTypes(registry),
          workers,
        })
        const failed = await failUnrunnableJobs(tx, config.WORKER_UNKNOWN_TYPE_FAIL_AFTER_MS)
        // In a savepoint: whatever goes wrong with a row's key must never undo this server's announce
        // (other servers would take it for dead after SERVER_STALE_MS).
        const keys = await tx.transaction((sp) => reconcileLimitKeys(sp, registry, { boot: false })).catch((err) => {
          this.log.error({ err }, 'could not repair concurrency keys; the next announce retries')
          return { moved: 0, failed: [] }
        })
        return { failed, keys }
      })
      if (failed.length > 0) this.log.warn({ jobIds: failed }, 'failed jobs of a type that no live server registers')
      this.logKeyRepair(keys)
    } catch (err) {
      this.log.error({ err }, 'announcing this server failed')
    }
  }

  /**
   * Once per boot, by the manager: the built-in cron jobs (one pending row each; watchChain once per
   * configured chain, tag `system:watchChain:<id>`) and one deployMulticall3 per chain.
   */
  private async seedBuiltInJobs(): Promise<void> {
    const { config } = this.serverApp
    const now = new Date()
    const crons: BuiltInCron[] = []
    if (config.CRON_REMOVE_OLD_WORKER_JOBS) crons.push({ type: 'removeOldWorkerJobs', cronSchedule: config.CRON_REMOVE_OLD_WORKER_JOBS })
    if (config.CRON_WATCH_CHAIN) {
      for (const chain of config.chains) crons.push({ type: 'watchChain', cronSchedule: config.CRON_WATCH_CHAIN, ...chainJob(chain) })
    }
    for (const cron of crons) {
      const res = await seedCronJob(this.serverApp.db, cron, now)
      this.log.info({ type: cron.type, schedule: cron.cronSchedule, chainId: (cron.data as { chainId?: number })?.chainId, ...res }, 'cron job seeded')
    }
    if (config.CHAINS) {
      // Moving from CHAIN_RPC_URL to CHAINS: the one-chain schedule (plain tag) is replaced by the per-chain ones.
      const retired = await retireBuiltInSchedule(this.serverApp.db, 'watchChain', 'replaced by the per-chain watchChain schedules of CHAINS')
      if (retired.length > 0) this.log.info({ jobIds: retired }, 'the one-chain watchChain schedule was retired for the per-chain ones')
    }
    if (config.DEPLOY_MULTICALL3_ON_BOOT) {
      for (const chain of config.chains) {
        const { data, tagSuffix } = chainJob(chain)
        const job = await submitBuiltInJob(
          this.serverApp.db,
          this.serverApp.registry,
          { type: 'deployMulticall3', data, autoRescheduleOnFailure: true, autoRescheduleOnFailureDelay: 60, maxAttempts: 5 },
          tagSuffix,
        )
        this.log.info({ jobId: job.id, chainId: chain.id }, 'deployMulticall3 submitted')
      }
    }
  }
}
