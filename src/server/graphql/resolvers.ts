import { type Caller, isAdmin, ownerOf, type SignedIn } from '../auth/callers'
import { AccessError, forbidden, unauthenticated } from '../auth/errors'
import type { WorkerJob } from '../db/schema'
import type { ServerApp } from '../serverApp'
import type { JobStatus } from '../workers/queue/states'
import { isStorableText } from '../workers/queue/rows'
import { statusOf } from '../workers/queue/states'
import type { SubmitJobInput } from '../workers/queue/submit'
import type { Access, GqlContext } from './access'
import { answering, badInput } from './errors'
import {
  findJob,
  finishedPerMinute,
  findUser,
  jobChain,
  type JobListFilter,
  listJobs,
  listNotifications,
  markAllNotificationsRead,
  markNotificationRead,
  workerOverview,
} from './jobQueries'
import { DateTimeScalar, JSONScalar } from './scalars'

/**
 * Resolvers. Who may do what is decided here, from ctx.caller (see src/server/auth): every mutation but
 * the two sign-in ones needs a session; a user sees and acts on their own jobs and notifications only,
 * admins on all. Writes go through serverApp.workerManager (via the submit policy) and queue/cancel.ts.
 */

export const MAX_PAGE_LIMIT = 100
/** Rows one request may list across all its list fields (user job data can be 256 KiB a row). */
export const MAX_ROWS_PER_REQUEST = 100
/** Sign-in mutations per request: each writes a nonce or runs a signature check. */
export const MAX_SIGN_INS_PER_REQUEST = 1
/** Deep offsets cost a walk over every skipped row: past this, filter instead. */
export const MAX_PAGE_OFFSET = 10_000

/** The GraphQL input as graphql-js hands it over: omitted fields are absent, explicit nulls are null. */
type GqlSubmitInput = { [K in keyof SubmitJobInput]?: unknown }

/** Drops nulls (null means "not given", so zod's defaults apply). */
function toSubmitInput(input: GqlSubmitInput): SubmitJobInput {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(input)) if (v !== null && v !== undefined) out[k] = v
  return out as SubmitJobInput
}

function parseId(id: string, field = 'id'): number {
  if (typeof id !== 'string' || !/^[1-9]\d{0,15}$/.test(id) || !Number.isSafeInteger(Number(id)))
    throw badInput(field, `Invalid argument ${field}: expected a positive integer, got ${JSON.stringify(String(id).slice(0, 40))}`)
  return Number(id)
}

/** The most minutes finishedPerMinute covers (a day), and the most links jobChain follows each way. */
export const MAX_CHART_MINUTES = 1440
export const MAX_CHAIN_LINKS = 50

/** An integer argument within bounds, or BAD_USER_INPUT naming it. */
function boundedInt(field: string, v: number | null | undefined, fallback: number, min: number, max: number): number {
  const n = v ?? fallback
  if (!Number.isInteger(n) || n < min || n > max) throw badInput(field, `Invalid argument ${field}: must be an integer between ${min} and ${max}, got ${n}`)
  return n
}

/** A filter string: at most 200 characters, none that Postgres cannot store (the query would fail on it). */
function filterText(v: string | null | undefined, name: string): string | undefined {
  if (v == null) return undefined
  if (v.length > 200 || !isStorableText(v)) throw badInput(`filter.${name}`, `Invalid filter ${name}: at most 200 characters, no NUL or lone surrogate`)
  return v
}

function page(ctx: GqlContext, limit: number | null | undefined, offset: number | null | undefined): { limit: number; offset: number } {
  const l = limit ?? 50
  const o = offset ?? 0
  if (l < 1 || l > MAX_PAGE_LIMIT) throw badInput('limit', `Invalid argument limit: must be between 1 and ${MAX_PAGE_LIMIT}, got ${l}`)
  if (o < 0 || o > MAX_PAGE_OFFSET) throw badInput('offset', `Invalid argument offset: must be between 0 and ${MAX_PAGE_OFFSET}, got ${o}`)
  ctx.spent.rows += l
  if (ctx.spent.rows > MAX_ROWS_PER_REQUEST)
    throw badInput('limit', `at most ${MAX_ROWS_PER_REQUEST} rows per request across all lists (the limits of this request add up to ${ctx.spent.rows})`)
  return { limit: l, offset: o }
}

/** A per-request count (jobs submitted, sign-ins) that aliases must not multiply. */
function spend(ctx: GqlContext, what: 'jobs' | 'signIns', n: number, max: number, field: string, noun: string): void {
  ctx.spent[what] += n
  if (ctx.spent[what] > max) throw badInput(field, `at most ${max} ${noun} per request, across all fields (got ${ctx.spent[what]})`)
}

function signedIn(ctx: GqlContext): SignedIn {
  if (ctx.caller.kind === 'anonymous') throw unauthenticated(ctx.caller.refused)
  return ctx.caller
}

function admin(ctx: GqlContext): SignedIn {
  const caller = signedIn(ctx)
  if (!caller.isAdmin) throw forbidden('admins only')
  return caller
}

/**
 * A signed-in wallet (not the API token, which has no user of its own). Also what an application's own
 * resolvers start with (graphql/extend.ts exports it as requireUser); its refusals need `answering`.
 */
export function user(ctx: GqlContext): Extract<Caller, { kind: 'user' }> {
  const caller = signedIn(ctx)
  if (caller.kind !== 'user') throw forbidden('this needs a signed-in wallet: the API token has no user of its own')
  return caller
}

/** A stack names files, and often hosts: only admins see it (at the top and in a cancelled run's outcome). */
function withoutStacks(result: unknown): unknown {
  if (result === null || typeof result !== 'object' || Array.isArray(result)) return result
  const { stack: _stack, ...rest } = result as Record<string, unknown>
  if ('outcome' in rest) rest.outcome = withoutStacks(rest.outcome)
  return rest
}

export function createResolvers(serverApp: ServerApp, access: Access) {
  const { db, config } = serverApp
  /** SUBMIT_BATCH_MAX (admins: ADMIN_SUBMIT_BATCH_MAX) is per request: every submit field of it counts. */
  const spendJobs = (ctx: GqlContext, n: number, field: string) => {
    if (ctx.caller.kind === 'anonymous') return // the policy refuses it: UNAUTHENTICATED comes first
    const max = isAdmin(ctx.caller) ? config.ADMIN_SUBMIT_BATCH_MAX : config.SUBMIT_BATCH_MAX
    spend(ctx, 'jobs', n, max, field, 'jobs')
  }
  return {
    JSON: JSONScalar,
    DateTime: DateTimeScalar,
    WorkerJob: {
      status: (job: WorkerJob) => statusOf(job),
      result: (job: WorkerJob, _: unknown, ctx: GqlContext) => (isAdmin(ctx.caller) ? job.result : withoutStacks(job.result)),
      lockedBy: (job: WorkerJob, _: unknown, ctx: GqlContext) => (isAdmin(ctx.caller) ? job.lockedBy : null),
    },
    Query: {
      me: (_: unknown, __: unknown, ctx: GqlContext) =>
        answering(async () => {
          if (ctx.caller.kind !== 'user') return null
          const row = await findUser(db, ctx.caller.userId)
          return row && { ...row, isAdmin: ctx.caller.isAdmin }
        }),
      job: (_: unknown, args: { id: string }, ctx: GqlContext) =>
        answering(() => findJob(db, parseId(args.id), ownerOf(signedIn(ctx)))),
      jobs: (
        _: unknown,
        args: { filter?: { type?: string | null; status?: JobStatus | null; userId?: number | null; tag?: string | null } | null; limit?: number | null; offset?: number | null; order?: string | null },
        ctx: GqlContext,
      ) =>
        answering(() => {
          const caller = signedIn(ctx)
          const f = args.filter ?? {}
          const owner = ownerOf(caller)
          if (owner !== undefined && f.userId != null && f.userId !== owner) throw forbidden('a user sees their own jobs: only admins may filter by another userId', 'filter.userId')
          const filter: JobListFilter = {
            type: filterText(f.type, 'type'),
            status: f.status ?? undefined,
            tag: filterText(f.tag, 'tag'),
            userId: owner ?? f.userId ?? undefined,
          }
          const order = args.order ?? 'NEWEST_FIRST'
          return listJobs(db, filter, {
            ...page(ctx, args.limit, args.offset),
            newestFirst: order === 'NEWEST_FIRST' || order === 'DUE_LAST',
            byDue: order === 'DUE_FIRST' || order === 'DUE_LAST',
          })
        }),
      finishedPerMinute: (_: unknown, args: { minutes?: number | null }, ctx: GqlContext) =>
        answering(() => {
          admin(ctx)
          return finishedPerMinute(db, boundedInt('minutes', args.minutes, 60, 1, MAX_CHART_MINUTES))
        }),
      jobChain: (_: unknown, args: { id: string; limit?: number | null }, ctx: GqlContext) =>
        answering(async () => {
          const owner = ownerOf(signedIn(ctx))
          const id = parseId(args.id)
          const limit = boundedInt('limit', args.limit, MAX_CHAIN_LINKS, 1, MAX_CHAIN_LINKS)
          // Its rows (up to limit each way) count against the request's row budget, as a list's do.
          ctx.spent.rows += 2 * limit
          if (ctx.spent.rows > MAX_ROWS_PER_REQUEST)
            throw badInput('limit', `at most ${MAX_ROWS_PER_REQUEST} rows per request across all lists (the limits of this request add up to ${ctx.spent.rows})`)
          return jobChain(db, id, limit, owner)
        }),
      workerStatus: (_: unknown, __: unknown, ctx: GqlContext) =>
        answering(async () => {
          admin(ctx)
          return workerOverview(db)
        }),
      myNotifications: (_: unknown, args: { limit?: number | null; offset?: number | null }, ctx: GqlContext) =>
        answering(() => listNotifications(db, user(ctx).userId, page(ctx, args.limit, args.offset))),
    },
    Mutation: {
      generateSiweMessage: (_: unknown, args: { address: string }, ctx: GqlContext) =>
        answering(() => {
          spend(ctx, 'signIns', 1, MAX_SIGN_INS_PER_REQUEST, 'address', 'sign-in mutation')
          return access.siwe.generateMessage(args.address)
        }),
      authenticateWithSiwe: (_: unknown, args: { message: string; signature: string }, ctx: GqlContext) =>
        answering(async () => {
          spend(ctx, 'signIns', 1, MAX_SIGN_INS_PER_REQUEST, 'message', 'sign-in mutation')
          const u = await access.siwe.authenticate(args.message, args.signature)
          const { token, expiresAt } = await access.sessions.issue(u)
          const row = await findUser(db, u.id)
          return { token, expiresAt, user: { ...row!, isAdmin: access.isAdminWallet(u.walletAddress) } }
        }),
      submitJob: (_: unknown, args: { input: GqlSubmitInput }, ctx: GqlContext) =>
        answering(async () => {
          spendJobs(ctx, 1, 'input')
          return (await access.submitPolicy.submit(ctx.caller, [toSubmitInput(args.input)], { batch: false }))[0]!
        }),
      submitJobs: (_: unknown, args: { jobs: GqlSubmitInput[] }, ctx: GqlContext) =>
        answering(() => {
          spendJobs(ctx, args.jobs.length, 'jobs')
          return access.submitPolicy.submit(ctx.caller, args.jobs.map(toSubmitInput), { batch: true })
        }),
      cancelJob: (_: unknown, args: { id: string }, ctx: GqlContext) =>
        answering(async () => {
          const caller = signedIn(ctx)
          const { job } = await access.jobActions.cancel(caller, parseId(args.id))
          return { job, status: statusOf(job) }
        }),
      rerunJob: (_: unknown, args: { id: string }, ctx: GqlContext) =>
        answering(() => access.jobActions.rerun(signedIn(ctx), parseId(args.id))),
      markNotificationRead: (_: unknown, args: { id: string }, ctx: GqlContext) =>
        answering(async () => {
          const row = await markNotificationRead(db, user(ctx).userId, parseId(args.id))
          if (!row) throw new AccessError('NOT_FOUND', `no notification ${args.id} of yours`, 'id')
          return row
        }),
      markAllNotificationsRead: (_: unknown, __: unknown, ctx: GqlContext) => answering(() => markAllNotificationsRead(db, user(ctx).userId)),
    },
    Subscription: {
      notificationAdded: {
        subscribe: (_: unknown, __: unknown, ctx: GqlContext) => answering(() => access.live.notifications(user(ctx).userId, ctx.request.signal)),
        resolve: (row: unknown) => row,
      },
      jobUpdated: {
        subscribe: (_: unknown, args: { id: string }, ctx: GqlContext) =>
          answering(async () => {
          const caller = signedIn(ctx)
          const id = parseId(args.id)
          // The same rule as job(id): a job that is not the caller's is as good as absent.
          if (!(await findJob(db, id, ownerOf(caller)))) throw new AccessError('NOT_FOUND', `no job ${id} you may see`, 'id')
          return access.live.jobUpdates(id, ctx.request.signal, { subscriber: caller.kind === 'user' ? caller.userId : 'apiToken' })
          }),
        resolve: (row: unknown) => row,
      },
    },
  }
}
