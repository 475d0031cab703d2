/**
 * Entry point of a child worker process (spawned by WorkerManager with an IPC channel).
 * It waits for its init message, builds its own ServerApp (own database pool, same registry), runs a
 * WorkerLoop, and exits when told to drain, or on its own when the manager's IPC channel closes, so a
 * crashed manager never leaves orphans behind.
 */
import { createLogger, flushLogger } from '../log'
import { createServerApp } from '../serverApp'
import type { ToChild, ToManager } from './ipc'
import { buildRegistry, loadJobModules } from './jobs/registry'
import { WorkerLoop } from './workerLoop'

const send = (m: ToManager) => process.send?.(m)

let loop: WorkerLoop | null = null
let exiting = false

async function init(msg: Extract<ToChild, { type: 'init' }>): Promise<void> {
  const { config, workerId } = msg
  const log = createLogger({
    level: config.WORKER_LOG_LEVEL,
    pretty: config.LOG_PRETTY,
    buffered: true,
    base: { pid: process.pid, workerId },
  })
  const registry = buildRegistry(await loadJobModules(msg.jobModules))
  // Three connections: claims, outcome writes and heartbeats can overlap; LISTEN takes its own.
  const serverApp = createServerApp({ config, log, registry, dbPoolSize: 3, applicationName: `worker ${workerId}` })
  loop = new WorkerLoop(serverApp, log, {
    workerId,
    concurrency: config.WORKER_CONCURRENCY,
    pollIntervalMs: config.WORKER_POLL_INTERVAL_MS,
    leaseMs: config.WORKER_LEASE_MS,
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
  exitHook = async () => {
    await loop?.drain()
    await serverApp.dbHandle.close()
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
  }
})

// The manager is gone (crashed or killed): drain and exit instead of running on as an orphan.
process.on('disconnect', () => void drainAndExit(0))
const parentPid = process.ppid
setInterval(() => {
  if (process.ppid !== parentPid) void drainAndExit(0)
}, 1000).unref()
// SIGTERM/SIGINT to the whole process group (Ctrl-C): the manager orchestrates the drain, so ignore them here.
process.on('SIGINT', () => {})
process.on('SIGTERM', () => void drainAndExit(0))
