import type { ChainClients, ChainSet } from './chain/clients'
import type { Config } from './config'
import { createDb, type Database, type DbHandle } from './db/client'
import type { Logger } from './log'
import { JobMetricsRecorder } from './workers/jobMetrics'
import type { JobRegistry } from './workers/jobs/types'
import { createSubmitter, type JobSubmitter } from './workers/queue/submit'

// Submitting lives in queue/submit.ts (validation, COPY or INSERT, the transaction); re-exported for callers.
export { createSubmitter, type JobSubmitter }

/** The one object built at boot and handed to everything that needs the server's resources. */
export interface ServerApp {
  config: Config
  db: Database
  dbHandle: DbHandle
  log: Logger
  /** Every configured chain (CHAINS, or the one chain of CHAIN_RPC_URL). */
  chains: ChainSet
  /** The default chain: the first of `chains` (sign-in, and jobs whose data names no chain). */
  chain: ChainClients
  registry: JobRegistry
  workerManager: JobSubmitter
  /**
   * This process's job event counts (outcomes, pickup latency, claim errors, chain lag): a child sends
   * them to its manager with each status report (workers/jobMetrics.ts); /metrics drains the main one's.
   */
  metrics: JobMetricsRecorder
  /**
   * Where users reach this server: BASE_URL, or (outside production, where it may be unset) the URL it
   * listens on, known once boot has called setListeningUrl. SIWE messages and CORS are built from it.
   */
  baseUrl(): URL
  setListeningUrl(url: string): void
}

export function createServerApp(opts: {
  config: Config
  log: Logger
  registry: JobRegistry
  dbPoolSize?: number
  applicationName?: string
}): ServerApp {
  const dbHandle = createDb(opts.config.DATABASE_URL, {
    max: opts.dbPoolSize,
    applicationName: opts.applicationName,
    connectTimeoutMs: opts.config.DB_CONNECT_TIMEOUT_MS,
    statementTimeoutMs: opts.config.DB_STATEMENT_TIMEOUT_MS,
  })
  let chains: ChainSet | undefined
  let listening: URL | undefined
  const metrics = new JobMetricsRecorder()
  const configured = opts.config.BASE_URL ? new URL(opts.config.BASE_URL) : undefined
  return {
    config: opts.config,
    db: dbHandle.db,
    dbHandle,
    log: opts.log,
    // Built on first use: viem is the largest dependency, and a worker that never runs a chain job
    // should not pay its memory. Bun's require loads the module synchronously.
    get chains() {
      chains ??= (require('./chain/clients') as typeof import('./chain/clients')).createChainSet(opts.config, (spec, endpoint, outcome) =>
        metrics.rpcRequestEnded(spec.id, endpoint, outcome),
      )
      return chains
    },
    get chain() {
      return this.chains.get()
    },
    registry: opts.registry,
    workerManager: createSubmitter(dbHandle.db, opts.registry),
    metrics,
    baseUrl() {
      const url = configured ?? listening
      if (!url) throw new Error('the server has no base URL yet: BASE_URL is unset and it is not listening')
      return url
    },
    setListeningUrl(url) {
      listening = new URL(url)
    },
  }
}
