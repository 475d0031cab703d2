import type { ChainClients, ChainSet } from './chain/clients'
import type { SendRequest, SendResult } from './chain/sender'
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
  /**
   * Sends a transaction from the server wallet exactly once per job and step, whatever crashes and reruns
   * happen around it (chain/sender; docs/chain-jobs.md says what that covers). Declare the job type's
   * concurrencyKey as the sending wallet so its sends are serialised across the cluster.
   */
  sendTransaction(job: { id: number }, step: string, request: SendRequest, opts?: { chainId?: number; signal?: AbortSignal; log?: Logger }): Promise<SendResult>
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
    async sendTransaction(job, step, request, o = {}) {
      const { sendForJob } = require('./chain/sender') as typeof import('./chain/sender')
      // The chain of CHAINS to send on (the default chain when unset); each chain has its own nonce counter.
      const clients = this.chains.get(o.chainId)
      const deps = { db: dbHandle.db, clients, chainId: await clients.getChainId(), log: o.log ?? opts.log, signal: o.signal }
      return sendForJob(deps, job, step, request)
    },
  }
}
