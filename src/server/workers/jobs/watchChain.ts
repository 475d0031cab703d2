import { z } from 'zod'
import { defineJob } from './types'

/** Reads new blocks from the per-chain cursor and feeds their logs to the chain event handlers (src/server/chain). */
export const watchChainJob = defineJob({
  type: 'watchChain',
  // chainId: which of CHAINS (each chain has its own schedule, tag `system:watchChain:<id>`); unset: the default chain.
  dataSchema: z.object({ chainId: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional() }).strict(),
  timeoutMs: 5 * 60_000,
  async run({ serverApp, log, signal, job }) {
    // Imported on first run, so worker processes that never run chain jobs don't load viem.
    const { watchChain } = await import('../../chain/watcher')
    return watchChain(serverApp, { chainId: job.data.chainId, log, signal })
  },
})
