import { z } from 'zod'
import { defineJob } from './types'

export const watchChainJob = defineJob({
  type: 'watchChain',
  dataSchema: z.object({}).strict(),
  timeoutMs: 5 * 60_000,
  async run() {
    throw new Error('watchChain: not implemented yet')
  },
})
