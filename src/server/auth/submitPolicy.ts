import { sql } from 'drizzle-orm'
import type { Config } from '../config'
import { type Database, type Executor, runQuery, type Transaction } from '../db/client'
import type { WorkerJob } from '../db/schema'
import type { JobRegistry } from '../workers/jobs/types'
import { cronProblem, nextCronRun } from '../workers/cron'
import { PENDING, SIGNED_IN_USER } from '../workers/queue/states'
import type { JobSubmitter, SubmitJobInput, SubmitOptions } from '../workers/queue/submit'
import { type Caller, isAdmin } from './callers'
import { AccessError, unauthenticated } from './errors'
import { createRateLimiter } from './rateLimit'

/**
 * A user's cron job may not run more often than this. Each run of a schedule creates the next one without
 * passing through submit again, so the submit rate limit cannot bound what a schedule costs: this does.
 */
export const USER_CRON_MIN_INTERVAL_SECONDS = 60
/**
 * The largest job data a user may submit, as JSON characters. Results are capped at the same size
 * (storable.ts); code on the server and admins are not limited here (the request body limit still is).
 */
export const USER_DATA_MAX_CHARS = 256 * 1024

/** Runs of a schedule looked at for its shortest gap (a schedule such as `0,1 * * * *` is irregular). */
const CRON_RUNS_CHECKED = 12

/** The shortest gap in seconds between the next runs of a valid cron expression. */
function shortestCronGap(expr: string, now = new Date()): number {
  let prev = nextCronRun(expr, now)
  let gap = Number.POSITIVE_INFINITY
  for (let i = 1; i < CRON_RUNS_CHECKED; i++) {
    const next = nextCronRun(expr, prev)
    gap = Math.min(gap, (next.getTime() - prev.getTime()) / 1000)
    prev = next
  }
  return gap
}

type PolicyConfig = Pick<Config, 'SUBMIT_BATCH_MAX' | 'ADMIN_SUBMIT_BATCH_MAX' | 'SUBMIT_RATE_PER_MINUTE' | 'MAX_PENDING_JOBS_PER_USER'>

/**
 * Who may submit what through the API, and how much. The one owner of these rules; the resolvers call it,
 * code on the server calls workerManager directly and is not limited.
 * - a session is required; each type says who may submit it (default admin);
 * - a user's jobs are their own: userId comes from the session, and only admins may set another;
 * - users: at most SUBMIT_BATCH_MAX jobs per request, SUBMIT_RATE_PER_MINUTE jobs per minute (per server),
 *   and MAX_PENDING_JOBS_PER_USER pending at once (across servers: counted in the insert's transaction);
 *   their cron jobs run at most once a minute.
 */
export function createSubmitPolicy(deps: { db: Database; registry: JobRegistry; submitter: JobSubmitter; config: PolicyConfig }) {
  const limiter = createRateLimiter({ perMinute: deps.config.SUBMIT_RATE_PER_MINUTE })
  const cap = deps.config.MAX_PENDING_JOBS_PER_USER

  /** The input with its userId decided, or a refusal naming the field (`type`, `jobs[2].userId`). */
  function owned(caller: Exclude<Caller, { kind: 'anonymous' }>, input: SubmitJobInput, field: (name: string) => string): SubmitJobInput {
    const def = typeof input.type === 'string' ? deps.registry[input.type] : undefined
    // An unknown type is left to validation, which names it; a known admin-only one is refused here.
    if (def && (def.access ?? 'admin') === 'admin' && !caller.isAdmin)
      throw new AccessError('FORBIDDEN', `job type ${JSON.stringify(input.type)} may only be submitted by an admin`, field('type'))
    if (!caller.isAdmin && typeof input.cronSchedule === 'string' && cronProblem(input.cronSchedule) === null) {
      if (shortestCronGap(input.cronSchedule) < USER_CRON_MIN_INTERVAL_SECONDS)
        throw new AccessError('FORBIDDEN', `a user's cron job may run at most once every ${USER_CRON_MIN_INTERVAL_SECONDS} s`, field('cronSchedule'))
    }
    // Negative priorities jump ahead of the built-in jobs' class (BUILT_IN_PRIORITY): the server's and admins' own.
    if (!caller.isAdmin && typeof input.priority === 'number' && input.priority < 0)
      throw new AccessError('FORBIDDEN', 'a priority below 0 is for admins only (0 is the default; higher runs later)', field('priority'))
    if (!caller.isAdmin && input.data !== undefined && (JSON.stringify(input.data)?.length ?? 0) > USER_DATA_MAX_CHARS)
      throw new AccessError('BAD_USER_INPUT', `job data is limited to ${USER_DATA_MAX_CHARS} characters of JSON`, field('data'))
    if (caller.kind === 'apiToken') return input
    if (input.userId !== undefined && input.userId !== caller.userId) {
      if (!caller.isAdmin) throw new AccessError('FORBIDDEN', 'userId is taken from your session: only admins may submit for another user', field('userId'))
      return input
    }
    return { ...input, userId: caller.userId }
  }

  /** The rate limit and the pending cap, for one user adding `n` jobs; the cap's count is locked only by submit. */
  function rateLimited(userId: number, n: number): void {
    const taken = limiter.take(userId, n)
    if (!taken.ok) {
      throw new AccessError('RATE_LIMITED', `submit rate limit: at most ${deps.config.SUBMIT_RATE_PER_MINUTE} jobs per minute`, undefined, {
        retryAfterSeconds: taken.retryAfterSeconds,
      })
    }
  }

  async function underCap(tx: Executor, userId: number, n: number, field?: string): Promise<void> {
    const [{ count }] = (await runQuery(
      tx,
      sql`SELECT count(*)::int AS count FROM (SELECT 1 FROM worker_jobs WHERE user_id = ${userId} AND ${SIGNED_IN_USER} AND ${PENDING} LIMIT ${cap}) AS p`,
    )) as unknown as [{ count: number }]
    if (count + n > cap) throw new AccessError('LIMIT_EXCEEDED', `at most ${cap} pending jobs per user: ${count} pending, ${n} more submitted`, field)
  }

  /** Serializes this user's submits and reruns (only theirs), so two concurrent ones cannot both pass the cap. */
  async function lockUser(tx: Executor, userId: number): Promise<void> {
    await runQuery(tx, sql`SELECT pg_advisory_xact_lock(hashtextextended(${`submit:user:${userId}`}, 0))`)
  }

  return {
    /**
     * For a user's rerun (queue/cancel.ts inserts it): the same rate, and the same cap under the same lock
     * as a submit of one job; `insert` runs in that transaction.
     */
    async admitOne<T>(userId: number, insert: (tx: Transaction) => Promise<T>): Promise<T> {
      rateLimited(userId, 1)
      return deps.db.transaction(async (tx) => {
        await lockUser(tx, userId)
        await underCap(tx, userId, 1)
        return insert(tx)
      })
    },

    async submit(caller: Caller, inputs: readonly SubmitJobInput[], opts: { batch: boolean }): Promise<WorkerJob[]> {
      if (caller.kind === 'anonymous') throw unauthenticated(caller.refused)
      const admin = isAdmin(caller)
      const max = admin ? deps.config.ADMIN_SUBMIT_BATCH_MAX : deps.config.SUBMIT_BATCH_MAX
      if (inputs.length > max) throw new AccessError('BAD_USER_INPUT', `at most ${max} jobs per request, got ${inputs.length}`, 'jobs')
      const field = (i: number) => (name: string) => (opts.batch ? `jobs[${i}].${name}` : name)
      const rows = inputs.map((input, i) => owned(caller, input, field(i)))
      // One job goes through submitJob, so its fields are named as in the input (`due`, not `jobs[0].due`).
      const insert = (o: SubmitOptions) => (opts.batch ? deps.submitter.submitJobs(rows, o) : deps.submitter.submitJob(rows[0]!, o).then((j) => [j]))
      if (admin || caller.kind !== 'user') return insert({})
      const userId = caller.userId
      rateLimited(userId, rows.length)
      return deps.db.transaction(async (tx) => {
        await lockUser(tx, userId)
        await underCap(tx, userId, rows.length, opts.batch ? 'jobs' : undefined)
        return insert({ tx })
      })
    },
  }
}

export type SubmitPolicy = ReturnType<typeof createSubmitPolicy>
