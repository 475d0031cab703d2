import { z } from 'zod'
import { defineJob } from './types'

/** Ensures Multicall3 at its canonical address; `forceRedeploy` is documented in docs/chain-jobs.md. */
export const deployMulticall3Job = defineJob({
  type: 'deployMulticall3',
  // chainId: which of CHAINS (the boot submits one per chain); unset: the default chain.
  dataSchema: z.object({ chainId: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(), forceRedeploy: z.boolean().optional() }).strict(),
  timeoutMs: 5 * 60_000,
  async run({ serverApp, log, job, signal }) {
    // Imported on first run, so worker processes that never run chain jobs don't load viem.
    const { deployMulticall3 } = await import('../../chain/deployMulticall3')
    return deployMulticall3(serverApp, { chainId: job.data.chainId, forceRedeploy: job.data.forceRedeploy, jobId: job.id, log, signal })
  },
})
