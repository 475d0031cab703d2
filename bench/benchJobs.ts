import { z } from 'zod'
import { defineJob } from '../src/server/workers/jobs/types'
import { reportProbeStart } from './probe'

/** Job types the benchmark registers in our server through the public `jobModules` option. */

/** Does nothing; returns a tiny constant so the benchmark can check that every row's result was written. */
export const noopJob = defineJob({
  type: 'noop',
  dataSchema: z.object({}).passthrough(),
  async run() {
    return { ok: true }
  },
})

/** Reports the moment its handler starts (see probe.ts). */
export const latencyProbeJob = defineJob({
  type: 'latencyProbe',
  dataSchema: z.object({ seq: z.number().int(), t: z.number(), port: z.number().int() }),
  async run({ job }) {
    reportProbeStart(job.data)
    return null
  },
})

export const jobs = [noopJob, latencyProbeJob]
