import type { ChainClients } from './chain/clients'
import type { Config } from './config'
import { createDb, type Database, type DbHandle, type Transaction } from './db/client'
import type { WorkerJob } from './db/schema'
import type { Logger } from './log'
import type { JobRegistry } from './workers/jobs/types'
import { COPY_THRESHOLD, copyJobs } from './workers/queue/copyInsert'
import {
  insertValidatedJobs,
  type SubmitJobInput,
  validateJobInput,
  validateJobInputSlices,
  validateJobInputs,
} from './workers/queue/submit'

/** Submitting jobs: what resolvers and job handlers use. `tx` enrols the insert in the caller's transaction. */
export interface JobSubmitter {
  submitJob(input: SubmitJobInput, opts?: { tx?: Transaction }): Promise<WorkerJob>
  submitJobs(inputs: readonly SubmitJobInput[], opts?: { tx?: Transaction }): Promise<WorkerJob[]>
}

/** The one object built at boot and handed to everything that needs the server's resources. */
export interface ServerApp {
  config: Config
  db: Database
  dbHandle: DbHandle
  log: Logger
  chain: ChainClients
  registry: JobRegistry
  workerManager: JobSubmitter
}

export function createSubmitter(db: Database, registry: JobRegistry): JobSubmitter {
  return {
    async submitJob(input, opts) {
      return (await insertValidatedJobs(db, [validateJobInput(registry, input)], opts))[0]!
    },
    // async, so a validation error is a rejected promise like a database error, never a synchronous throw.
    async submitJobs(inputs, opts) {
      // Large untagged batches outside a caller's transaction stream into COPY while being validated.
      const untagged = Array.isArray(inputs) && inputs.every((i) => (i as { tag?: unknown } | null)?.tag == null)
      if (!opts?.tx && untagged && inputs.length >= COPY_THRESHOLD) {
        return copyJobs(db.$client, inputs.length, validateJobInputSlices(registry, inputs))
      }
      return insertValidatedJobs(db, validateJobInputs(registry, inputs), opts)
    },
  }
}

export function createServerApp(opts: {
  config: Config
  log: Logger
  registry: JobRegistry
  dbPoolSize?: number
  applicationName?: string
}): ServerApp {
  const dbHandle = createDb(opts.config.DATABASE_URL, { max: opts.dbPoolSize, applicationName: opts.applicationName })
  let chain: ChainClients | undefined
  return {
    config: opts.config,
    db: dbHandle.db,
    dbHandle,
    log: opts.log,
    // Built on first use: viem is the largest dependency, and a worker that never runs a chain job
    // should not pay its memory. Bun's require loads the module synchronously.
    get chain() {
      chain ??= (require('./chain/clients') as typeof import('./chain/clients')).createChainClients(opts.config)
      return chain
    },
    registry: opts.registry,
    workerManager: createSubmitter(dbHandle.db, opts.registry),
  }
}
