import { type SQL, sql } from 'drizzle-orm'
import { type WorkerJob, workerJobs } from '../db/schema'

/** A job's state, derived from its columns (see the comment on workerJobs). */
export type JobStatus = 'PENDING' | 'RUNNING' | 'SUCCEEDED' | 'FAILED'

const t = workerJobs

/** The WHERE condition of each status; the GraphQL filter and the /metrics counts share these. */
export const STATUS_WHERE: Record<JobStatus, SQL> = {
  PENDING: sql`${t.started} IS NULL AND ${t.finished} IS NULL`,
  RUNNING: sql`${t.started} IS NOT NULL AND ${t.finished} IS NULL`,
  SUCCEEDED: sql`${t.finished} IS NOT NULL AND ${t.success} IS TRUE`,
  // A job cancelled by a newer one with its tag is finished with success = false: it counts as failed.
  FAILED: sql`${t.finished} IS NOT NULL AND ${t.success} IS NOT TRUE`,
}

export function statusOf(job: Pick<WorkerJob, 'started' | 'finished' | 'success'>): JobStatus {
  if (job.finished) return job.success === true ? 'SUCCEEDED' : 'FAILED'
  return job.started ? 'RUNNING' : 'PENDING'
}
