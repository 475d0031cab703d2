import { z } from 'zod'
import { pruneChainLedger } from '../../chain/ledgerPrune'
import { pruneSettledSends } from '../../chain/sender/prune'
import { deleteExpiredJobs } from '../queue/cleanup'
import { defineJob } from './types'

export const removeOldWorkerJobsJob = defineJob({
  type: 'removeOldWorkerJobs',
  dataSchema: z.object({ batchSize: z.number().int().min(1).max(100_000).optional() }).strict(),
  timeoutMs: 30 * 60_000,
  async run({ serverApp, log, job, signal }) {
    const deletedCount = await deleteExpiredJobs(serverApp.db, { batchSize: job.data.batchSize, signal })
    // The chain ledger's orphans (below the reorg window, referenced by nothing) go with the same daily run.
    const prunedChainEvents = await pruneChainLedger(serverApp.db, { maxReorgDepth: serverApp.config.CHAIN_MAX_REORG_DEPTH, batchSize: job.data.batchSize, signal })
    // Send records of finished jobs, a week after they settled (the sender's audit trail).
    const prunedSends = await pruneSettledSends(serverApp.db, { batchSize: job.data.batchSize, signal })
    log.info({ deletedCount, prunedChainEvents, prunedSends }, 'removed old worker jobs')
    return { deletedCount, prunedChainEvents, prunedSends }
  },
})
