import { randomUUID } from 'node:crypto'
import { asc, getTableColumns, sql } from 'drizzle-orm'
import type postgres from 'postgres'
import type { Database } from '../db/client'
import { notifications, type WorkerJob, workerJobs } from '../db/schema'
import type { Logger } from '../log'
import { bigintArray } from '../workers/queue/params'
import { LiveStream } from './stream'

export { LiveStream } from './stream'

/**
 * The live-update hub behind the GraphQL subscriptions, one per server process.
 *
 * - notificationAdded: migration 0003's row trigger announces every committed notification on channel
 *   `notification_added` with `{ id, userId }`. One shared LISTEN (postgres.js `sql.listen`, its own
 *   connection) is started by the first subscriber; ids of users with subscribers here are fetched by id, in
 *   batches, and each row goes to the subscribers of the row's own user_id (the payload is a hint, never
 *   content). A lost LISTEN connection is caught up on by id, and a watchdog pings the channel, because
 *   postgres.js drops a listener for good when the database stayed unreachable for a few seconds.
 * - jobUpdated: no trigger on worker_jobs (it would cost the engine throughput). One poller, running only
 *   while a job subscription exists, reads the version (updated_at, cancelled_at) of every watched job in one
 *   `WHERE id = ANY($1)` every pollMs, and fetches the whole row of those that moved.
 *
 * Both work across processes and servers by construction: they read what was committed, whoever wrote it.
 * Access is the caller's: pass only ids the caller was found allowed to see.
 */

export const NOTIFICATION_CHANNEL = 'notification_added'

export type Notification = typeof notifications.$inferSelect

/**
 * At most this many open subscriptions per caller (user id, or another key such as 'apiToken'): a browser
 * holds one notificationAdded per tab and a few jobUpdated; 20 leaves room for that, and a script opening
 * more is trying to use up the server's memory.
 */
export const MAX_SUBSCRIPTIONS_PER_USER = 20
/**
 * At most this many per server process, all callers together: each holds a socket, a bounded queue and a
 * slot in the job poll's id list; 10,000 keeps the worst case (every queue full) within a few hundred MB
 * and the poll's id list small. Scale out with more instances beyond that.
 */
export const MAX_SUBSCRIPTIONS = 10_000
/**
 * A notification subscriber that falls this many notifications behind is ended with LiveOverflowError
 * (after what was queued): dropping notifications would lose them silently, and a client that stopped
 * reading for that long must resubscribe and refetch its list anyway. Job updates are never queued beyond
 * one row: each row is the whole state, so a newer one replaces an unread one (nothing lost).
 */
export const NOTIFICATION_QUEUE_MAX = 64
/** How often the job poller looks, by default. */
export const DEFAULT_POLL_MS = 250
/** How long the LISTEN connection may stay silent before the watchdog pings through it, by default. */
export const DEFAULT_HEARTBEAT_MS = 5_000

/** Ids fetched by one query. */
const FETCH_BATCH = 1_000
/** Notification ids waiting for a fetch; beyond this (the database failing for long) a catch-up replaces them. */
const MAX_PENDING_IDS = 10_000
/** Rows read by one catch-up page. */
const CATCH_UP_PAGE = 500
/**
 * Ids delivered to one subscriber that it remembers, to skip duplicates between a catch-up and the live path.
 * Past this, the older half is forgotten and the subscriber's floor raised over it.
 */
const DELIVERED_WINDOW = 1_024

/** A subscription refused by a limit. The message says which; `limit` tells it to code. */
export class LiveLimitError extends Error {
  readonly code = 'LIVE_LIMIT'
  constructor(
    readonly limit: 'perUser' | 'total',
    message: string,
  ) {
    super(message)
    this.name = 'LiveLimitError'
  }
}

/** Ends a notification subscription whose consumer fell NOTIFICATION_QUEUE_MAX behind. */
export class LiveOverflowError extends Error {
  readonly code = 'LIVE_OVERFLOW'
  constructor(capacity: number) {
    super(`live updates: this subscription fell ${capacity} notifications behind and was ended; subscribe again and refetch the list`)
    this.name = 'LiveOverflowError'
  }
}

export interface LiveLimits {
  perUser: number
  total: number
  notificationQueue: number
}

export interface LiveHubOptions {
  /** The server's postgres.js client (serverApp.dbHandle.client): its `listen` connection carries the LISTEN. */
  sql: postgres.Sql
  /** The drizzle database on the same client (serverApp.db): fetches and polls use its pool. */
  db: Database
  log: Logger
  /** Job poll interval (default 250 ms). */
  pollMs?: number
  /** Watchdog interval (default 5 s). */
  heartbeatMs?: number
  /** Overrides of the limits above (tests). */
  limits?: Partial<LiveLimits>
}

/** Who a subscription counts against for MAX_SUBSCRIPTIONS_PER_USER: a user id, or another caller's key. */
export type LiveSubscriber = number | string

export interface LiveHubStats {
  notificationSubscriptions: number
  jobSubscriptions: number
  /** Sizes of the hub's maps: all 0 once every subscription has ended. */
  usersWatched: number
  jobsWatched: number
  callersCounted: number
  /** A LISTEN is registered (it may be reconnecting). */
  listening: boolean
  /** The backend pid of the LISTEN connection, as postgres.js last saw it. */
  listenerPid: number | null
  /** The job poller has a poll scheduled or running. */
  polling: boolean
  counters: {
    /** LISTEN requests sent by the hub (the first, and each after the watchdog found it dead). */
    listens: number
    /** LISTENs re-established (postgres.js reconnects and watchdog restarts), each followed by a catch-up. */
    reconnects: number
    pings: number
    payloads: number
    notificationFetches: number
    catchUps: number
    /** Version queries of the job poller. */
    jobPolls: number
    /** Whole-row fetches of jobs whose version moved, counted once their rows are handed out. */
    jobFetches: number
    overflows: number
  }
}

export interface LiveHub {
  /**
   * The notifications of `userId` committed after the stream is ready (`await stream.ready` if it matters),
   * in the order they are heard, each once. Ends on abort, on close(), or with LiveOverflowError.
   * Throws LiveLimitError beyond the limits.
   */
  notifications(userId: number, signal: AbortSignal): LiveStream<Notification>
  /**
   * The row of job `jobId` now, then each time it changes; ends after the row that is finished (or when the
   * row is gone). `subscriber` is who it counts against (the signed-in user's id, 'apiToken'…). The caller
   * has already checked that this caller may see the job. Throws LiveLimitError beyond the limits.
   */
  jobUpdates(jobId: number, signal: AbortSignal, opts: { subscriber: LiveSubscriber }): LiveStream<WorkerJob>
  stats(): LiveHubStats
  /** Ends every stream (done), stops the poller and the watchdog, and UNLISTENs. */
  close(): Promise<void>
}

interface NotificationSub {
  userId: number
  owner: LiveSubscriber
  stream: LiveStream<Notification>
  /** Catch-ups deliver only ids above this: the highest id committed when the subscription became ready. */
  floor: number | null
  delivered: Set<number>
  detach: () => void
  removed: boolean
}

interface JobSub {
  jobId: number
  owner: LiveSubscriber
  stream: LiveStream<WorkerJob>
  detach: () => void
  removed: boolean
}

interface JobWatch {
  subs: Set<JobSub>
  version: string | null
  last: WorkerJob | null
}

// The version of a job row: every state change sets updated_at (µs as text, so two changes in one
// millisecond differ); cancelled_at too, so a cancellation request is seen whatever the writer did.
const JOB_VERSION = sql<string>`${workerJobs.updatedAt}::text || '/' || coalesce(${workerJobs.cancelledAt}::text, '')`

export function createLiveHub(opts: LiveHubOptions): LiveHub {
  return new Hub(opts)
}

class Hub implements LiveHub {
  private readonly sql: postgres.Sql
  private readonly db: Database
  private readonly log: Logger
  private readonly pollMs: number
  private readonly heartbeatMs: number
  private readonly limits: LiveLimits
  private readonly hubId = randomUUID()

  private closed = false
  private closing: Promise<void> | null = null
  private readonly closeController = new AbortController()

  private total = 0
  private readonly perOwner = new Map<LiveSubscriber, number>()

  // notifications
  private readonly users = new Map<number, Set<NotificationSub>>()
  private notificationSubs = 0
  private handle: postgres.ListenMeta | null = null
  /** Bumped by each LISTEN request: callbacks of an older one (revived by postgres.js) are ignored. */
  private generation = 0
  private hasListened = false
  private resolveListening!: () => void
  private readonly listening = new Promise<void>((resolve) => {
    this.resolveListening = resolve
  })
  private lastHeardAt = 0
  private pingWaiter: ((heard: boolean) => void) | null = null
  private watchdog: ReturnType<typeof setTimeout> | null = null
  private ticking: Promise<void> | null = null
  private readonly pendingIds = new Set<number>()
  private catchUpWanted = false
  private pumping: Promise<void> | null = null

  // jobs
  private readonly jobs = new Map<number, JobWatch>()
  private jobSubs = 0
  private pollTimer: ReturnType<typeof setTimeout> | null = null
  private polling: Promise<void> | null = null
  private pollFailing = false

  private readonly counters: LiveHubStats['counters'] = {
    listens: 0,
    reconnects: 0,
    pings: 0,
    payloads: 0,
    notificationFetches: 0,
    catchUps: 0,
    jobPolls: 0,
    jobFetches: 0,
    overflows: 0,
  }

  constructor(opts: LiveHubOptions) {
    this.sql = opts.sql
    this.db = opts.db
    this.log = opts.log.child({ module: 'live' })
    this.pollMs = opts.pollMs ?? DEFAULT_POLL_MS
    this.heartbeatMs = opts.heartbeatMs ?? DEFAULT_HEARTBEAT_MS
    this.limits = {
      perUser: opts.limits?.perUser ?? MAX_SUBSCRIPTIONS_PER_USER,
      total: opts.limits?.total ?? MAX_SUBSCRIPTIONS,
      notificationQueue: opts.limits?.notificationQueue ?? NOTIFICATION_QUEUE_MAX,
    }
  }

  // ---------------------------------------------------------------- subscriptions

  notifications(userId: number, signal: AbortSignal): LiveStream<Notification> {
    if (!Number.isSafeInteger(userId) || userId <= 0) throw new TypeError(`live updates: userId must be a positive integer, got ${String(userId)}`)
    const capacity = this.limits.notificationQueue
    const sub: NotificationSub = {
      userId,
      owner: userId,
      stream: new LiveStream<Notification>({ kind: 'error', capacity, error: () => new LiveOverflowError(capacity) }, () => this.removeNotificationSub(sub)),
      floor: null,
      delivered: new Set(),
      detach: () => {},
      removed: false,
    }
    if (!this.admit(userId, signal)) {
      sub.removed = true
      sub.stream.end()
      return sub.stream
    }
    sub.detach = onAbort(signal, () => sub.stream.cancel())
    const set = this.users.get(userId) ?? new Set<NotificationSub>()
    this.users.set(userId, set)
    set.add(sub)
    if (++this.notificationSubs === 1) this.startWatchdog()
    void this.establishFloor(sub)
    return sub.stream
  }

  jobUpdates(jobId: number, signal: AbortSignal, opts: { subscriber: LiveSubscriber }): LiveStream<WorkerJob> {
    if (!Number.isSafeInteger(jobId) || jobId <= 0) throw new TypeError(`live updates: jobId must be a positive integer, got ${String(jobId)}`)
    const sub: JobSub = {
      jobId,
      owner: opts.subscriber,
      stream: new LiveStream<WorkerJob>({ kind: 'latest' }, () => this.removeJobSub(sub)),
      detach: () => {},
      removed: false,
    }
    if (!this.admit(opts.subscriber, signal)) {
      sub.removed = true
      sub.stream.end()
      return sub.stream
    }
    sub.detach = onAbort(signal, () => sub.stream.cancel())
    const watch: JobWatch = this.jobs.get(jobId) ?? { subs: new Set(), version: null, last: null }
    this.jobs.set(jobId, watch)
    watch.subs.add(sub)
    this.jobSubs++
    if (watch.last) {
      sub.stream.push(watch.last)
      sub.stream.markReady()
    }
    this.ensurePoller()
    return sub.stream
  }

  /** Counts a new subscription, or throws LiveLimitError. false (nothing counted) when already aborted. */
  private admit(owner: LiveSubscriber, signal: AbortSignal): boolean {
    if (this.closed) throw new Error('live updates: the hub is closed')
    if (signal.aborted) return false
    if (this.total >= this.limits.total) {
      throw new LiveLimitError('total', `live updates: this server already holds ${this.total} subscriptions, the most it allows (${this.limits.total}); try again later`)
    }
    const mine = this.perOwner.get(owner) ?? 0
    if (mine >= this.limits.perUser) {
      const who = typeof owner === 'number' ? `user ${owner}` : `caller ${JSON.stringify(owner)}`
      throw new LiveLimitError('perUser', `live updates: ${who} already holds ${mine} subscriptions, the most one caller may (${this.limits.perUser}); end one first`)
    }
    this.total++
    this.perOwner.set(owner, mine + 1)
    return true
  }

  private release(owner: LiveSubscriber): void {
    this.total--
    const n = (this.perOwner.get(owner) ?? 1) - 1
    if (n <= 0) this.perOwner.delete(owner)
    else this.perOwner.set(owner, n)
  }

  private removeNotificationSub(sub: NotificationSub): void {
    if (sub.removed) return
    sub.removed = true
    sub.detach()
    const set = this.users.get(sub.userId)
    set?.delete(sub)
    if (set?.size === 0) this.users.delete(sub.userId)
    sub.delivered.clear()
    this.release(sub.owner)
    if (--this.notificationSubs === 0) this.stopWatchdog()
  }

  private removeJobSub(sub: JobSub): void {
    if (sub.removed) return
    sub.removed = true
    sub.detach()
    const watch = this.jobs.get(sub.jobId)
    watch?.subs.delete(sub)
    if (watch?.subs.size === 0) this.jobs.delete(sub.jobId)
    this.release(sub.owner)
    this.jobSubs--
    if (this.jobs.size === 0) this.stopPoller()
  }

  // ---------------------------------------------------------------- notifications: LISTEN and watchdog

  private startWatchdog(): void {
    if (this.closed || this.watchdog || this.ticking) return
    // At once: the first subscriber starts the LISTEN; a later one after an idle spell (no checks then)
    // gets a ping now rather than in heartbeatMs.
    this.lastHeardAt = 0
    this.watchdog = setTimeout(() => void this.watchdogTick(), 0)
  }

  private stopWatchdog(): void {
    if (this.watchdog) clearTimeout(this.watchdog)
    this.watchdog = null
  }

  private async watchdogTick(): Promise<void> {
    this.watchdog = null
    if (this.closed || this.notificationSubs === 0) return
    this.ticking = (async () => {
      if (!this.handle) await this.listen()
      else if (Date.now() - this.lastHeardAt >= this.heartbeatMs && !(await this.ping()) && !this.closed) {
        this.log.warn({ listenerPid: this.handle?.state.pid ?? null }, 'live: the LISTEN connection did not echo a ping; listening again')
        await this.listen()
      }
    })()
      .catch((err) => this.log.warn({ err }, 'live: watchdog failed'))
      .finally(() => {
        this.ticking = null
      })
    await this.ticking
    if (!this.closed && this.notificationSubs > 0 && !this.watchdog) this.watchdog = setTimeout(() => void this.watchdogTick(), this.heartbeatMs)
  }

  /** (Re)registers the LISTEN. A failure leaves `handle` null, and the next watchdog tick tries again. */
  private async listen(): Promise<void> {
    const gen = ++this.generation
    const old = this.handle
    this.handle = null
    // Its channel may already be gone (postgres.js gave up on it); if not, this sends UNLISTEN, in order
    // before the LISTEN below on the same connection.
    if (old) void old.unlisten().catch(() => {})
    this.counters.listens++
    const request = this.sql.listen(
      NOTIFICATION_CHANNEL,
      (payload) => {
        if (gen === this.generation) this.onPayload(payload)
      },
      // Called by postgres.js each time the LISTEN is in place: first, and after each reconnect.
      () => {
        if (gen === this.generation) this.onListening()
      },
    )
    // A LISTEN that neither succeeds nor fails in time (a black-holed network) is given up on, so that the
    // watchdog can try again; if it succeeds later, it is released.
    const late = (handle: postgres.ListenMeta) => {
      if (gen !== this.generation || this.closed) void handle.unlisten().catch(() => {})
    }
    try {
      const handle = await withTimeout(request, Math.max(1_000, 2 * this.heartbeatMs), this.closeController.signal)
      if (!handle) {
        if (gen === this.generation) this.generation++
        request.then(late, () => {})
        if (!this.closed) this.log.warn('live: LISTEN did not complete in time; retrying')
        return
      }
      if (gen !== this.generation || this.closed) return late(handle)
      this.handle = handle
    } catch (err) {
      if (gen === this.generation && !this.closed) this.log.warn({ err }, 'live: LISTEN failed; retrying')
    }
  }

  private onListening(): void {
    this.lastHeardAt = Date.now()
    if (!this.hasListened) {
      this.hasListened = true
      this.resolveListening()
      return
    }
    // Reconnected: what was committed while the connection was down was announced to no one.
    this.counters.reconnects++
    this.log.info('live: LISTEN re-established; catching up')
    this.catchUpWanted = true
    this.schedulePump()
  }

  /** Whether a ping sent through the channel comes back (any payload heard meanwhile counts). */
  private async ping(): Promise<boolean> {
    this.counters.pings++
    let timer: ReturnType<typeof setTimeout> | undefined
    const heard = new Promise<boolean>((resolve) => {
      this.pingWaiter = resolve
      timer = setTimeout(() => resolve(false), this.heartbeatMs)
    })
    try {
      // Raced with `heard`'s deadline: on a partitioned network the query itself may never return.
      const sent = this.sql`SELECT pg_notify(${NOTIFICATION_CHANNEL}, ${JSON.stringify({ ping: this.hubId })})`.then(
        () => heard,
        () => false,
      )
      return await Promise.race([sent, heard])
    } finally {
      clearTimeout(timer)
      this.pingWaiter = null
    }
  }

  private onPayload(raw: string): void {
    this.lastHeardAt = Date.now()
    this.counters.payloads++
    this.pingWaiter?.(true)
    let msg: unknown
    try {
      msg = JSON.parse(raw)
    } catch {
      return
    }
    if (typeof msg !== 'object' || msg === null) return
    const { id, userId } = msg as { id?: unknown; userId?: unknown }
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id <= 0) return
    // The payload's user only spares a fetch for users nobody here watches; the row says who gets it.
    if (typeof userId === 'number' && !this.users.has(userId)) return
    this.pendingIds.add(id)
    if (this.pendingIds.size > MAX_PENDING_IDS) {
      this.pendingIds.clear()
      this.catchUpWanted = true
    }
    this.schedulePump()
  }

  /** The highest id committed now: catch-ups deliver to this subscriber only above it. */
  private async establishFloor(sub: NotificationSub): Promise<void> {
    await this.listening
    for (let failures = 0; !sub.removed && !this.closed; failures++) {
      try {
        const [row] = await this.db.select({ max: sql<string>`coalesce(max(${notifications.id}), 0)::text` }).from(notifications)
        const max = Number(row?.max ?? 0)
        sub.floor = sub.floor === null ? max : Math.max(sub.floor, max)
        break
      } catch (err) {
        if (failures === 0) this.log.warn({ err }, 'live: reading the notification floor failed; retrying')
        await this.pause(Math.min(5_000, 100 * 2 ** failures))
      }
    }
    sub.stream.markReady()
  }

  // ---------------------------------------------------------------- notifications: fetch and fan-out

  private schedulePump(): void {
    if (this.pumping || this.closed) return
    // setImmediate: the notifications of one socket read go into one fetch.
    this.pumping = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => this.pump())
      .catch((err) => this.log.error({ err }, 'live: notification pump failed'))
      .finally(() => {
        this.pumping = null
        if (!this.closed && (this.pendingIds.size > 0 || this.catchUpWanted)) this.schedulePump()
      })
  }

  private async pump(): Promise<void> {
    let failures = 0
    while (!this.closed && (this.pendingIds.size > 0 || this.catchUpWanted)) {
      if (this.users.size === 0) {
        this.pendingIds.clear()
        this.catchUpWanted = false
        return
      }
      const batch = this.pendingIds.size > 0 ? take(this.pendingIds, FETCH_BATCH) : null
      const catchUp = !batch
      if (catchUp) this.catchUpWanted = false
      try {
        if (batch) {
          this.counters.notificationFetches++
          const rows = await this.db
            .select()
            .from(notifications)
            .where(sql`${notifications.id} = ANY(${bigintArray(batch)})`)
            .orderBy(asc(notifications.id))
          this.deliver(rows, false)
        } else await this.catchUp()
        failures = 0
      } catch (err) {
        if (batch) for (const id of batch) this.pendingIds.add(id)
        else this.catchUpWanted = true
        if (failures === 0) this.log.warn({ err }, 'live: reading notifications failed; retrying')
        await this.pause(Math.min(5_000, 100 * 2 ** failures++))
      }
    }
  }

  /** Rows above each subscriber's floor that it was not given yet, for the users watched here, by id. */
  private async catchUp(): Promise<void> {
    let after = Number.POSITIVE_INFINITY
    for (const set of this.users.values()) for (const s of set) if (s.floor !== null) after = Math.min(after, s.floor)
    if (after === Number.POSITIVE_INFINITY) return
    this.counters.catchUps++
    const userIds = [...this.users.keys()]
    for (;;) {
      const rows = await this.db
        .select()
        .from(notifications)
        .where(sql`${notifications.userId} = ANY(${bigintArray(userIds)}) AND ${notifications.id} > ${after}`)
        .orderBy(asc(notifications.id))
        .limit(CATCH_UP_PAGE)
      this.deliver(rows, true)
      if (rows.length < CATCH_UP_PAGE || this.closed || this.users.size === 0) return
      after = rows[rows.length - 1]!.id
    }
  }

  private deliver(rows: Notification[], catchUp: boolean): void {
    for (const row of rows) {
      const set = this.users.get(row.userId)
      if (!set) continue
      for (const sub of [...set]) {
        if (sub.delivered.has(row.id)) continue
        if (catchUp && (sub.floor === null || row.id <= sub.floor)) continue
        remember(sub, row.id)
        if (!sub.stream.push(row)) {
          this.counters.overflows++
          this.log.warn({ userId: sub.userId, capacity: this.limits.notificationQueue }, 'live: notification subscriber fell behind; ended it')
        }
      }
    }
  }

  // ---------------------------------------------------------------- jobs: the poller

  private ensurePoller(): void {
    if (this.closed || this.pollTimer || this.polling) return
    this.pollTimer = setTimeout(() => this.poll(), 0)
  }

  private stopPoller(): void {
    if (this.pollTimer) clearTimeout(this.pollTimer)
    this.pollTimer = null
  }

  private poll(): void {
    this.pollTimer = null
    if (this.closed || this.jobs.size === 0) return
    this.polling = this.pollOnce()
      .then(
        () => {
          if (this.pollFailing) this.log.info('live: job poll recovered')
          this.pollFailing = false
        },
        (err) => {
          if (!this.pollFailing) this.log.warn({ err }, 'live: job poll failed; retrying')
          this.pollFailing = true
        },
      )
      .finally(() => {
        this.polling = null
        if (!this.closed && this.jobs.size > 0 && !this.pollTimer) this.pollTimer = setTimeout(() => this.poll(), this.pollMs)
      })
  }

  private async pollOnce(): Promise<void> {
    const ids = [...this.jobs.keys()]
    this.counters.jobPolls++
    const versions = await this.db
      .select({ id: workerJobs.id, version: JOB_VERSION })
      .from(workerJobs)
      .where(sql`${workerJobs.id} = ANY(${bigintArray(ids)})`)
    const found = new Set<number>()
    const moved: number[] = []
    for (const v of versions) {
      found.add(v.id)
      if (this.jobs.get(v.id)?.version !== v.version) moved.push(v.id)
    }
    // Gone (cleanup deleted it, or it never existed): nothing more will come.
    for (const id of ids) if (!found.has(id)) this.endJob(id)
    if (moved.length === 0) return
    const rows = await this.db
      .select({ ...getTableColumns(workerJobs), version: JOB_VERSION })
      .from(workerJobs)
      .where(sql`${workerJobs.id} = ANY(${bigintArray(moved)})`)
    for (const { version, ...job } of rows) {
      const watch = this.jobs.get(job.id)
      if (!watch || watch.version === version) continue
      watch.version = version
      watch.last = job
      for (const sub of watch.subs) {
        sub.stream.push(job)
        sub.stream.markReady()
      }
      if (job.finished) this.endJob(job.id)
    }
    this.counters.jobFetches++
  }

  /** Ends the job's streams after what they hold (the finished row included). */
  private endJob(id: number): void {
    const watch = this.jobs.get(id)
    if (!watch) return
    for (const sub of [...watch.subs]) sub.stream.end()
    this.jobs.delete(id)
  }

  // ---------------------------------------------------------------- lifecycle

  private pause(ms: number): Promise<void> {
    const signal = this.closeController.signal
    if (signal.aborted) return Promise.resolve()
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t)
        signal.removeEventListener('abort', done)
        resolve()
      }
      const t = setTimeout(done, ms)
      signal.addEventListener('abort', done, { once: true })
    })
  }

  stats(): LiveHubStats {
    return {
      notificationSubscriptions: this.notificationSubs,
      jobSubscriptions: this.jobSubs,
      usersWatched: this.users.size,
      jobsWatched: this.jobs.size,
      callersCounted: this.perOwner.size,
      listening: this.handle !== null,
      listenerPid: this.handle?.state.pid ?? null,
      polling: this.pollTimer !== null || this.polling !== null,
      counters: { ...this.counters },
    }
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true
      this.closeController.abort()
      this.stopWatchdog()
      this.stopPoller()
      this.pingWaiter?.(false)
      for (const set of [...this.users.values()]) for (const sub of [...set]) sub.stream.end()
      for (const id of [...this.jobs.keys()]) this.endJob(id)
      this.pendingIds.clear()
      this.resolveListening()
      this.generation++
      await Promise.allSettled([this.pumping, this.polling, this.ticking])
      const handle = this.handle
      this.handle = null
      // UNLISTEN; the connection itself is postgres.js's listen connection, closed with the client.
      if (handle) await withTimeout(handle.unlisten(), 2_000).catch(() => {})
    })()
    return this.closing
  }
}

function onAbort(signal: AbortSignal, fn: () => void): () => void {
  signal.addEventListener('abort', fn, { once: true })
  return () => signal.removeEventListener('abort', fn)
}

function take(set: Set<number>, n: number): number[] {
  const out: number[] = []
  for (const id of set) {
    if (out.length >= n) break
    out.push(id)
  }
  for (const id of out) set.delete(id)
  return out
}

function remember(sub: NotificationSub, id: number): void {
  sub.delivered.add(id)
  if (sub.delivered.size <= DELIVERED_WINDOW) return
  const sorted = [...sub.delivered].sort((a, b) => a - b)
  const forget = sorted.slice(0, sorted.length >> 1)
  for (const x of forget) sub.delivered.delete(x)
  const top = forget[forget.length - 1]!
  sub.floor = sub.floor === null ? top : Math.max(sub.floor, top)
}

/** `p`, or undefined once `ms` have passed or `signal` aborted, whichever comes first. */
function withTimeout<T>(p: Promise<T>, ms: number, signal?: AbortSignal): Promise<T | undefined> {
  let t: ReturnType<typeof setTimeout> | undefined
  let onAbort: (() => void) | undefined
  const deadline = new Promise<undefined>((resolve) => {
    t = setTimeout(() => resolve(undefined), ms)
    onAbort = () => resolve(undefined)
    if (signal?.aborted) resolve(undefined)
    else signal?.addEventListener('abort', onAbort, { once: true })
  })
  return Promise.race([p, deadline]).finally(() => {
    clearTimeout(t)
    if (onAbort) signal?.removeEventListener('abort', onAbort)
  })
}

