import { z } from 'zod'
import { deleteExpiredJobs } from '../queue/cleanup'
import { defineJob } from './types'

export const removeOldWorkerJobsJob = defineJob({
  type: 'removeOldWorkerJobs',
  dataSchema: z.object({ batchSize: z.number().int().min(1).max(100_000).optional() }).strict(),
  timeoutMs: 30 * 60_000,
  async run({ serverApp, log, job, signal }) {
    const deletedCount = await deleteExpiredJobs(serverApp.db, { batchSize: job.data.batchSize, signal })
    log.info({ deletedCount }, 'removed old worker jobs')
    return { deletedCount }
  },
})
