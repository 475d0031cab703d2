/**
 * Entry point of a child worker process (spawned by WorkerManager with an IPC channel).
 * It waits for its init message, builds its own ServerApp (own database pool, same registry), runs a
 * WorkerLoop, and exits when told to drain, or on its own when the manager's IPC channel closes, so a
 * crashed manager never leaves orphans behind.
 */
import { createLogger, flushLogger } from '../log'
import { createServerApp } from '../serverApp'
import { guardStrayErrors } from '../strayErrors'
import { QUEUE_POOL_SIZE } from '../db/budget'
import { STATUS_INTERVAL_MS, type ToChild, type ToManager } from './ipc'
import { buildRegistry, loadJobModules } from './jobs/registry'
import { QueueDb } from './queueDb'
import { WorkerLoop } from './workerLoop'

const send = (m: ToManager) => process.send?.(m)

let loop: WorkerLoop | null = null
let exiting = false

/**
 * How long an idle child waits before it claims for a NOTIFY: 0 for the first child, a few ms more for
 * each next one. On an idle queue the first child takes the new job alone; before, every child claimed
 * at once and all but one came back empty, competing with the winner for the CPU and the row (0.3 to
 * 0.5 ms of pickup p50 on 2 cores). A later child still claims, so a job never waits for the poll when
 * the first child is full, only these few ms.
 */
export const notifyAnswerDelay = (index: number) => Math.min(index * 3, 12)

async function init(msg: Extract<ToChild, { type: 'init' }>): Promise<void> {
  const { config, workerId } = msg
  const log = createLogger({
    level: config.WORKER_LOG_LEVEL,
    pretty: config.LOG_PRETTY,
    buffered: true,
    base: { pid: process.pid, workerId },
  })
  guardStrayErrors(log, (code) => void flushLogger(log).finally(() => process.exit(code)))
  const registry = buildRegistry(await loadJobModules(msg.jobModules))
  // Handler code gets its own pool (serverApp.db); the queue's statements get theirs, so a handler holding
  // connections can never delay a claim, an outcome or a lease renewal. LISTEN takes one more.
  const serverApp = createServerApp({
    config,
    log,
    registry,
    dbPoolSize: config.WORKER_DB_POOL_SIZE,
    applicationName: `worker ${workerId}`,
  })
  // Every queue statement must answer well within a lease: the server cancels it (statement_timeout) and
  // QueueDb gives up on a silent connection, both at half a lease.
  const halfLease = Math.max(1000, Math.floor(config.WORKER_LEASE_MS / 2))
  const queue = new QueueDb(
    config.DATABASE_URL,
    {
      max: QUEUE_POOL_SIZE,
      applicationName: `worker ${workerId} queue`,
      connectTimeoutMs: Math.min(config.DB_CONNECT_TIMEOUT_MS, halfLease),
      statementTimeoutMs: halfLease,
    },
    halfLease,
  )
  loop = new WorkerLoop(serverApp, log, {
    workerId,
    concurrency: config.WORKER_CONCURRENCY,
    urgentSlots: config.WORKER_URGENT_SLOTS,
    pollIntervalMs: config.WORKER_POLL_INTERVAL_MS,
    leaseMs: config.WORKER_LEASE_MS,
    defaultTimeoutMs: config.WORKER_DEFAULT_JOB_TIMEOUT_MS,
    queueDb: queue,
    notifyAnswerDelayMs: notifyAnswerDelay(msg.index),
  })
  // Chain code (viem) loads on first use, but parsing it blocks the event loop for ~100-200 ms: when
  // this server schedules chain jobs, load it before claiming anything so it never stalls running jobs.
  if (config.CRON_WATCH_CHAIN || config.DEPLOY_MULTICALL3_ON_BOOT) {
    await Promise.all([import('../chain/watcher'), import('../chain/deployMulticall3')])
    void serverApp.chain
  }
  await loop.start()
  log.info({ concurrency: config.WORKER_CONCURRENCY }, 'worker started')
  send({ type: 'ready', workerId })
  // The event metrics ride on the status report: one message a second, however many jobs ran.
  const report = () => {
    if (loop) send({ type: 'status', workerId, health: loop.health(), metrics: serverApp.metrics.take() ?? undefined })
  }
  const reporter = setInterval(report, STATUS_INTERVAL_MS)
  exitHook = async () => {
    clearInterval(reporter)
    await loop?.drain()
    // What the drain's last outcomes added (best effort: the channel may already be closed).
    report()
    await Promise.all([serverApp.dbHandle.close(), queue.close()])
    await flushLogger(log)
  }
}

let exitHook: (() => Promise<void>) | null = null

async function drainAndExit(code: number): Promise<void> {
  if (exiting) return
  exiting = true
  try {
    await exitHook?.()
  } finally {
    process.exit(code)
  }
}

process.on('message', (msg: ToChild) => {
  if (msg.type === 'init') {
    init(msg).catch((err) => {
      send({ type: 'fatal', error: String(err?.stack ?? err) })
      process.exit(1)
    })
  } else if (msg.type === 'drain') {
    void drainAndExit(0)
  } else if (msg.type === 'abort') {
    loop?.abortAll(msg.reason)
  }
})

/** How long an orphan may take to record its aborted jobs before it exits anyway (the database may be gone too). */
const ORPHAN_EXIT_DEADLINE_MS = 5000

/**
 * The manager is gone (crashed or killed): nobody will ever tell this child to stop, so it aborts its
 * running jobs at once (they go back to pending, as after any interruption), records that, and exits,
 * instead of running on as an orphan until its longest job ends.
 */
function orphaned(): void {
  if (exiting) return
  loop?.abortAll('interrupted: the server process is gone')
  setTimeout(() => process.exit(1), ORPHAN_EXIT_DEADLINE_MS).unref()
  void drainAndExit(0)
}
process.on('disconnect', orphaned)
const parentPid = process.ppid
setInterval(() => {
  if (process.ppid !== parentPid) orphaned()
}, 1000).unref()
// SIGTERM/SIGINT to the whole process group (Ctrl-C): the manager orchestrates the drain, so ignore them here.
process.on('SIGINT', () => {})
process.on('SIGTERM', () => void drainAndExit(0))
