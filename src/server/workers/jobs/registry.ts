import { deployMulticall3Job } from './deployMulticall3'
import { removeOldWorkerJobsJob } from './removeOldWorkerJobs'
import type { Job, JobRegistry } from './types'
import { watchChainJob } from './watchChain'

/** The built-in job types. Add a type by writing its file and listing it here. */
export const builtInJobs: readonly Job[] = [removeOldWorkerJobsJob, watchChainJob, deployMulticall3Job]

/**
 * Builds the registry from the built-in types plus any extra ones (an application's own types, or a
 * test's). A type registered twice is a startup error, never a silent override.
 */
export function buildRegistry(extra: readonly Job[] = []): JobRegistry {
  // No prototype: a type named "toString" or "__proto__" is unknown, not Object.prototype's member.
  const registry: Record<string, Job> = Object.create(null)
  for (const job of [...builtInJobs, ...extra]) {
    if (registry[job.type]) throw new Error(`job type "${job.type}" is registered twice`)
    checkLimits(job)
    registry[job.type] = job
  }
  return Object.freeze(registry)
}

/**
 * Loads extra job types from modules (absolute paths or package names). Each module exports a `jobs`
 * array of job definitions. Children import the same modules, so every process has the same registry.
 */
export async function loadJobModules(modules: readonly string[]): Promise<Job[]> {
  const jobs: Job[] = []
  for (const m of modules) {
    const mod = (await import(m)) as { jobs?: Job[] }
    if (!Array.isArray(mod.jobs)) throw new Error(`job module ${m} does not export a "jobs" array`)
    jobs.push(...mod.jobs)
  }
  return jobs
}

/** A limit that could never be met (0, a fraction, a key limit without a key) is a startup error. */
function checkLimits(job: Job): void {
  const positive = (n: unknown) => typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 1_000_000
  if (job.concurrency !== undefined && !positive(job.concurrency)) throw new Error(`job type "${job.type}": concurrency must be an integer from 1 to 1000000`)
  if (job.keyConcurrency !== undefined && !positive(job.keyConcurrency)) throw new Error(`job type "${job.type}": keyConcurrency must be an integer from 1 to 1000000`)
  if (job.keyConcurrency !== undefined && !job.concurrencyKey) throw new Error(`job type "${job.type}": keyConcurrency needs a concurrencyKey`)
  if (job.concurrencyKey !== undefined && typeof job.concurrencyKey !== 'function') throw new Error(`job type "${job.type}": concurrencyKey must be a function of the data`)
  for (const [name, rate] of [['rateLimit', job.rateLimit], ['keyRateLimit', job.keyRateLimit]] as const) {
    if (rate === undefined) continue
    const windowOk = typeof rate?.perMs === 'number' && Number.isInteger(rate.perMs) && rate.perMs >= 1 && rate.perMs <= 86_400_000
    if (!positive(rate?.max) || !windowOk) throw new Error(`job type "${job.type}": ${name} needs max (an integer from 1 to 1000000) and perMs (an integer from 1 to 86400000)`)
  }
  if (job.keyRateLimit !== undefined && !job.concurrencyKey) throw new Error(`job type "${job.type}": keyRateLimit needs a concurrencyKey`)
}
