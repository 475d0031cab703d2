import { and, desc, eq, type SQL } from 'drizzle-orm'
import type { Database } from '../db/client'
import { type WorkerJob, workerJobs } from '../db/schema'
import { type JobStatus, STATUS_WHERE } from '../workers/queue/states'

/** Read-only queries behind the GraphQL API. Writes go through workerManager.submitJob, never here. */

export async function findJob(db: Database, id: number): Promise<WorkerJob | null> {
  const [row] = await db.select().from(workerJobs).where(eq(workerJobs.id, id)).limit(1)
  return row ?? null
}

/** Newest first (by id, which follows insertion order and uses the primary key). */
export function listJobs(db: Database, filter: { type?: string | null; status?: JobStatus | null; limit: number }): Promise<WorkerJob[]> {
  const where: SQL[] = []
  if (filter.type != null) where.push(eq(workerJobs.type, filter.type))
  if (filter.status != null) where.push(STATUS_WHERE[filter.status])
  return db
    .select()
    .from(workerJobs)
    .where(and(...where))
    .orderBy(desc(workerJobs.id))
    .limit(filter.limit)
}
