import { and, asc, count, desc, eq, inArray, isNotNull, type SQL, sql } from 'drizzle-orm'
import { type Database, runQuery } from '../db/client'
import { notifications, users, type WorkerJob, workerJobs, workerServers } from '../db/schema'
import { SERVER_STALE_MS } from '../workers/queue/servers'
import { CLAIMABLE_TEXT, FINISHED, type JobStatus, LIMITED_PENDING_TEXT, PENDING, RUNNING, SIGNED_IN_USER, STATUS_WHERE } from '../workers/queue/states'

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

/** Which states a status filter reads: each state is read through its own (partial) indexes. */
type Part = 'pending' | 'pendingLimited' | 'running' | 'finished'
const STATES_OF: Record<JobStatus, Part[]> = {
  // Pending rows live in two partial indexes: the claim index and the limited types' (db/schema.ts).
  PENDING: ['pending', 'pendingLimited'],
  RUNNING: ['running'],
  SUCCEEDED: ['finished'],
  FAILED: ['finished'],
  CANCELLED: ['finished'],
}
const ALL_PARTS: readonly Part[] = ['pending', 'pendingLimited', 'running', 'finished']
const STATE_WHERE: Record<Part, SQL> = {
  pending: sql.raw(CLAIMABLE_TEXT),
  pendingLimited: sql.raw(LIMITED_PENDING_TEXT),
  running: RUNNING,
  finished: FINISHED,
}

/**
 * One page and the total. The table is read one state at a time (pending, running, finished), each
 * part through the partial index its filters need (db/schema.ts: pending rows by user, finished rows by
 * type and by user, running rows through the running-lease index, tags in their own), so a rare type or
 * a user's few jobs are found without walking the table. The parts are merged by id (insertion order):
 * each gives at most offset + limit ids, the union keeps the page, and the rows are read by primary key.
 */
export async function listJobs(
  db: Database,
  filter: JobListFilter,
  page: { limit: number; offset: number; newestFirst: boolean },
): Promise<{ items: WorkerJob[]; total: number }> {
  const common: SQL[] = []
  if (filter.type !== undefined) common.push(eq(workerJobs.type, filter.type))
  if (filter.userId !== undefined) common.push(eq(workerJobs.userId, filter.userId))
  // Lets a user's pending part use the pending-by-user index (its predicate; see db/schema.ts).
  if (filter.userId !== undefined && filter.userId !== 0) common.push(SIGNED_IN_USER)
  if (filter.tag !== undefined) common.push(eq(workerJobs.tag, filter.tag))
  if (filter.status !== undefined) common.push(STATUS_WHERE[filter.status])
  const states = filter.status ? STATES_OF[filter.status] : ALL_PARTS
  const dir = page.newestFirst ? sql`DESC` : sql`ASC`
  const take = page.offset + page.limit
  const where = (state: Part) => and(STATE_WHERE[state], ...common)
  const parts = states.map((st) => sql`(SELECT id FROM worker_jobs WHERE ${where(st)} ORDER BY id ${dir} LIMIT ${take})`)
  const counts = states.map((st) => sql`(SELECT count(*) FROM worker_jobs WHERE ${where(st)})`)
  const [idRows, totalRows] = await Promise.all([
    runQuery(db, sql`SELECT id FROM (${sql.join(parts, sql` UNION ALL `)}) AS p ORDER BY id ${dir} LIMIT ${page.limit} OFFSET ${page.offset}`),
    runQuery(db, sql`SELECT (${sql.join(counts, sql` + `)})::int AS total`),
  ])
  const ids = idRows.map((r) => Number(r.id))
  const rows = ids.length === 0 ? [] : await db.select().from(workerJobs).where(inArray(workerJobs.id, ids))
  const byId = new Map(rows.map((r) => [r.id, r]))
  // A row that changed state between the two reads is still shown once, as it is now.
  const items = ids.flatMap((id) => byId.get(id) ?? [])
  return { items, total: Number(totalRows[0]!.total) }
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
