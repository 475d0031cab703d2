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

/** Waits `ms` on a timer, as a handler waiting on an RPC call does (the I/O-bound scenario). */
export const waitJob = defineJob({
  type: 'wait',
  dataSchema: z.object({ ms: z.number().int().min(0).max(60_000) }),
  async run({ job }) {
    await new Promise((r) => setTimeout(r, job.data.ms))
    return { ok: true }
  },
})

/** One at a time across the cluster (the limited-type scenario); registered only when BENCH_LIMITED=true. */
export const serialJob = defineJob({
  type: 'serial',
  dataSchema: z.object({ ms: z.number().int().min(0).max(60_000) }),
  concurrency: 1,
  async run({ job }) {
    await new Promise((r) => setTimeout(r, job.data.ms))
    return { ok: true }
  },
})

// A limited type costs every worker a claim of its own: it is registered only for the scenario that needs it,
// so the other scenarios measure the engine as most deployments run it.
export const jobs = process.env.BENCH_LIMITED === 'true' ? [noopJob, latencyProbeJob, waitJob, serialJob] : [noopJob, latencyProbeJob, waitJob]
