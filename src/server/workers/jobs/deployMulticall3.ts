import { z } from 'zod'
import { defineJob } from './types'

export const deployMulticall3Job = defineJob({
  type: 'deployMulticall3',
  dataSchema: z.object({ forceRedeploy: z.boolean().optional() }).strict(),
  timeoutMs: 5 * 60_000,
  async run() {
    throw new Error('deployMulticall3: not implemented yet')
  },
})
