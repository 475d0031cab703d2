import { z } from 'zod'
import { defineJob } from './types'

/** Ensures Multicall3 at its canonical address; `forceRedeploy` is documented in docs/chain-jobs.md. */
export const deployMulticall3Job = defineJob({
  type: 'deployMulticall3',
  dataSchema: z.object({ forceRedeploy: z.boolean().optional() }).strict(),
  timeoutMs: 5 * 60_000,
  async run({ serverApp, log, job, signal }) {
    // Imported on first run, so worker processes that never run chain jobs don't load viem.
    const { deployMulticall3 } = await import('../../chain/deployMulticall3')
    return deployMulticall3(serverApp, { forceRedeploy: job.data.forceRedeploy, jobId: job.id, log, signal })
  },
})
