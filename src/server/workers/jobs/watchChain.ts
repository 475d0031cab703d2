import { z } from 'zod'
import { defineJob } from './types'

/** Reads new blocks from the per-chain cursor and feeds their logs to the chain event handlers (src/server/chain). */
export const watchChainJob = defineJob({
  type: 'watchChain',
  dataSchema: z.object({}).strict(),
  timeoutMs: 5 * 60_000,
  async run({ serverApp, log, signal }) {
    // Imported on first run, so worker processes that never run chain jobs don't load viem.
    const { watchChain } = await import('../../chain/watcher')
    return watchChain(serverApp, { log, signal })
  },
})
