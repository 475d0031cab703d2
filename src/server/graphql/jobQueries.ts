import { and, asc, count, desc, eq, isNotNull, type SQL, sql } from 'drizzle-orm'
import type { Database } from '../db/client'
import { notifications, users, type WorkerJob, workerJobs, workerServers } from '../db/schema'
import { SERVER_STALE_MS } from '../workers/queue/servers'
import { type JobStatus, PENDING, STATUS_WHERE } from '../workers/queue/states'

/**
 * Read queries behind the GraphQL API, and the notification marks. Job writes go through
 * workerManager (submit) and queue/cancel.ts, never here. Callers pass the owner already decided by
 * the access rules: `userId` undefined means "any user" (admins only).
 */

export async function findJob(db: Database, id: number, ownerUserId?: number): Promise<WorkerJob | null> {
  const where = ownerUserId === undefined ? eq(workerJobs.id, id) : and(eq(workerJobs.id, id), eq(workerJobs.userId, ownerUserId))
  const [row] = await db.select().from(workerJobs).where(where).limit(1)
  return row ?? null
}

export interface JobListFilter {
  type?: string
  status?: JobStatus
  userId?: number
  tag?: string
}

/**
 * One page and the total. Each filter has an index that starts with it (type, user_id, tag, and the
 * status predicates' partial indexes), so a rare type is found without walking the table. Ordered by id,
 * which follows insertion order.
 */
export async function listJobs(
  db: Database,
  filter: JobListFilter,
  page: { limit: number; offset: number; newestFirst: boolean },
): Promise<{ items: WorkerJob[]; total: number }> {
  const where: SQL[] = []
  if (filter.type !== undefined) where.push(eq(workerJobs.type, filter.type))
  if (filter.status !== undefined) where.push(STATUS_WHERE[filter.status])
  if (filter.userId !== undefined) where.push(eq(workerJobs.userId, filter.userId))
  if (filter.tag !== undefined) where.push(eq(workerJobs.tag, filter.tag))
  const cond = and(...where)
  const [items, [totals]] = await Promise.all([
    db
      .select()
      .from(workerJobs)
      .where(cond)
      .orderBy(page.newestFirst ? desc(workerJobs.id) : asc(workerJobs.id))
      .limit(page.limit)
      .offset(page.offset),
    db.select({ n: count() }).from(workerJobs).where(cond),
  ])
  return { items, total: totals?.n ?? 0 }
}

export function findUser(db: Database, id: number) {
  return db
    .select()
    .from(users)
    .where(eq(users.id, id))
    .limit(1)
    .then((r) => r[0] ?? null)
}

export function listNotifications(db: Database, userId: number, page: { limit: number; offset: number }) {
  return db
    .select()
    .from(notifications)
    .where(eq(notifications.userId, userId))
    .orderBy(desc(notifications.createdAt), desc(notifications.id))
    .limit(page.limit)
    .offset(page.offset)
}

/** The caller's own notification marked read, or null when it is not theirs (or does not exist). */
export async function markNotificationRead(db: Database, userId: number, id: number) {
  const [row] = await db
    .update(notifications)
    .set({ read: true })
    .where(and(eq(notifications.id, id), eq(notifications.userId, userId)))
    .returning()
  return row ?? null
}

export async function markAllNotificationsRead(db: Database, userId: number): Promise<number> {
  const rows = await db
    .update(notifications)
    .set({ read: true })
    .where(and(eq(notifications.userId, userId), eq(notifications.read, false)))
    .returning({ id: notifications.id })
  return rows.length
}

/** Every server on the database (with the workers each last reported), job counts, and the cron schedules' next runs. */
export async function workerOverview(db: Database) {
  const status = sql<JobStatus>`CASE
    WHEN ${STATUS_WHERE.PENDING} THEN 'PENDING' WHEN ${STATUS_WHERE.RUNNING} THEN 'RUNNING'
    WHEN ${STATUS_WHERE.CANCELLED} THEN 'CANCELLED' WHEN ${STATUS_WHERE.SUCCEEDED} THEN 'SUCCEEDED' ELSE 'FAILED' END`
  const [servers, counts, crons] = await Promise.all([
    db.select().from(workerServers).orderBy(asc(workerServers.startedAt)),
    // An admin's overview: one pass over the table (bounded by the statement timeout on a huge one).
    db
      .select({ type: workerJobs.type, status, count: count() })
      .from(workerJobs)
      .groupBy(workerJobs.type, status)
      .orderBy(workerJobs.type, status),
    db
      .select({
        jobId: workerJobs.id,
        type: workerJobs.type,
        userId: workerJobs.userId,
        tag: workerJobs.tag,
        cronSchedule: workerJobs.cronSchedule,
        nextRun: workerJobs.due,
      })
      .from(workerJobs)
      .where(and(PENDING, isNotNull(workerJobs.cronSchedule)))
      .orderBy(asc(workerJobs.due))
      .limit(1000),
  ])
  const now = Date.now()
  return {
    servers: servers.map((s) => ({ ...s, live: now - s.lastSeenAt.getTime() < SERVER_STALE_MS })),
    counts,
    crons,
  }
}
