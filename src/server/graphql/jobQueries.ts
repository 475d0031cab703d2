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
  page: { limit: number; offset: number; newestFirst: boolean; byDue?: boolean },
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
  // By due time (DUE_FIRST / DUE_LAST), ties by id. No index is in due order for every state (the claim's
  // leads with priority), so each part sorts its matching rows (a top-N sort): filter a big table first.
  const order = page.byDue ? sql`due ${dir}, id ${dir}` : sql`id ${dir}`
  const take = page.offset + page.limit
  const where = (state: Part) => and(STATE_WHERE[state], ...common)
  const parts = states.map((st) => sql`(SELECT id, due FROM worker_jobs WHERE ${where(st)} ORDER BY ${order} LIMIT ${take})`)
  const counts = states.map((st) => sql`(SELECT count(*) FROM worker_jobs WHERE ${where(st)})`)
  const [idRows, totalRows] = await Promise.all([
    runQuery(db, sql`SELECT id FROM (${sql.join(parts, sql` UNION ALL `)}) AS p ORDER BY ${order} LIMIT ${page.limit} OFFSET ${page.offset}`),
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

/** One minute of finishedPerMinute: the outcomes recorded in it (cancelled jobs are neither). */
export interface MinuteCount {
  minute: Date
  succeeded: number
  failed: number
}

/**
 * Outcomes per minute over the last `minutes` minutes, the current one included, oldest first, every minute
 * present (zero when nothing finished). Bounded by the finished time: a range scan of
 * worker_jobs_finished_at_idx (finished, success), whose predicate this WHERE repeats, so a big table costs
 * only the rows of the window. The minutes come from the database's clock, which also stamps `finished`.
 */
export async function finishedPerMinute(db: Database, minutes: number): Promise<MinuteCount[]> {
  const rows = await runQuery(
    db,
    sql`WITH w AS (SELECT date_trunc('minute', now()) - make_interval(mins => ${minutes - 1}) AS since, date_trunc('minute', now()) AS until),
    c AS (
      SELECT date_trunc('minute', finished) AS minute,
             count(*) FILTER (WHERE success IS TRUE)::int AS succeeded,
             count(*) FILTER (WHERE success IS NOT TRUE)::int AS failed
      FROM worker_jobs
      WHERE ${FINISHED} AND cancelled_at IS NULL AND finished >= (SELECT since FROM w)
      GROUP BY 1
    )
    SELECT m.minute, coalesce(c.succeeded, 0) AS succeeded, coalesce(c.failed, 0) AS failed
    FROM w, generate_series(w.since, w.until, interval '1 minute') AS m(minute)
    LEFT JOIN c ON c.minute = m.minute
    ORDER BY m.minute`,
  )
  return rows.map((r) => ({ minute: new Date(r.minute as string | Date), succeeded: Number(r.succeeded), failed: Number(r.failed) }))
}

/** A job's chain: the rows it follows (oldest first) and the rows that follow it (by id), each side bounded. */
export interface JobChain {
  job: WorkerJob
  older: WorkerJob[]
  newer: WorkerJob[]
  /** The oldest link found follows a row that no longer exists (cleanup deleted it), or the walk stopped at the bound. */
  olderTruncated: boolean
  /** More newer links than the bound. */
  newerTruncated: boolean
}

/**
 * Follows rescheduled_from_job from one job both ways: back to the rows it retries or succeeds, forward
 * to its retries, cron successors and reruns (a job can have several: a retry and reruns). Each side
 * stops after `limit` links (and a hand-written cycle stops there too). Older links are read by primary
 * key, newer ones through worker_jobs_rescheduled_from_idx. `ownerUserId`: a user's walk stays in their rows.
 */
export async function jobChain(db: Database, id: number, limit: number, ownerUserId?: number): Promise<JobChain | null> {
  const job = await findJob(db, id, ownerUserId)
  if (!job) return null
  const mine = (alias: string) => (ownerUserId === undefined ? sql`TRUE` : sql`${sql.raw(alias)}.user_id = ${ownerUserId}`)
  const [olderRows, newerRows] = await Promise.all([
    job.rescheduledFromJob === null
      ? Promise.resolve([])
      : runQuery(
          db,
          sql`WITH RECURSIVE back(id, depth) AS (
            SELECT ${job.rescheduledFromJob}::bigint, 1
            UNION ALL
            SELECT w.rescheduled_from_job, b.depth + 1 FROM back b JOIN worker_jobs w ON w.id = b.id
            WHERE w.rescheduled_from_job IS NOT NULL AND b.depth <= ${limit} AND ${mine('w')}
          )
          SELECT id, depth FROM back ORDER BY depth LIMIT ${limit + 1}`,
        ),
    runQuery(
      db,
      sql`WITH RECURSIVE fwd(id, depth) AS (
        SELECT w.id, 1 FROM worker_jobs w WHERE w.rescheduled_from_job = ${id} AND ${mine('w')}
        UNION ALL
        SELECT w.id, f.depth + 1 FROM fwd f JOIN worker_jobs w ON w.rescheduled_from_job = f.id
        WHERE f.depth <= ${limit} AND ${mine('w')}
      )
      SELECT id FROM fwd LIMIT ${limit + 1}`,
    ),
  ])
  const olderIds = olderRows.map((r) => Number(r.id))
  const newerIds = newerRows.map((r) => Number(r.id))
  const wanted = [...olderIds.slice(0, limit), ...newerIds.slice(0, limit)]
  const rows = wanted.length === 0 ? [] : await db.select().from(workerJobs).where(and(inArray(workerJobs.id, wanted), ownerUserId === undefined ? undefined : eq(workerJobs.userId, ownerUserId)))
  const byId = new Map(rows.map((r) => [r.id, r]))
  const older = olderIds.slice(0, limit).flatMap((i) => byId.get(i) ?? [])
  // Nearest first from the walk; the page shows them oldest first.
  older.reverse()
  const newer = newerIds
    .slice(0, limit)
    .flatMap((i) => byId.get(i) ?? [])
    .sort((a, b) => a.id - b.id)
  return {
    job,
    older,
    newer,
    olderTruncated: olderIds.length > limit || older.length < Math.min(olderIds.length, limit),
    newerTruncated: newerIds.length > limit,
  }
}
