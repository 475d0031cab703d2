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
  findUser,
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

/** A filter string: at most 200 characters, none that Postgres cannot store (the query would fail on it). */
function filterText(v: string | null | undefined, name: string): string | undefined {
  if (v == null) return undefined
  if (v.length > 200 || !isStorableText(v)) throw badInput(`filter.${name}`, `Invalid filter ${name}: at most 200 characters, no NUL or lone surrogate`)
  return v
}

function page(limit: number | null | undefined, offset: number | null | undefined): { limit: number; offset: number } {
  const l = limit ?? 50
  const o = offset ?? 0
  if (l < 1 || l > MAX_PAGE_LIMIT) throw badInput('limit', `Invalid argument limit: must be between 1 and ${MAX_PAGE_LIMIT}, got ${l}`)
  if (o < 0 || o > MAX_PAGE_OFFSET) throw badInput('offset', `Invalid argument offset: must be between 0 and ${MAX_PAGE_OFFSET}, got ${o}`)
  return { limit: l, offset: o }
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

/** A signed-in wallet (not the API token, which has no user of its own). */
function user(ctx: GqlContext): Extract<Caller, { kind: 'user' }> {
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
  const { db } = serverApp
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
          return listJobs(db, filter, { ...page(args.limit, args.offset), newestFirst: args.order !== 'OLDEST_FIRST' })
        }),
      workerStatus: (_: unknown, __: unknown, ctx: GqlContext) =>
        answering(async () => {
          admin(ctx)
          return workerOverview(db)
        }),
      myNotifications: (_: unknown, args: { limit?: number | null; offset?: number | null }, ctx: GqlContext) =>
        answering(() => listNotifications(db, user(ctx).userId, page(args.limit, args.offset))),
    },
    Mutation: {
      generateSiweMessage: (_: unknown, args: { address: string }) => answering(() => access.siwe.generateMessage(args.address)),
      authenticateWithSiwe: (_: unknown, args: { message: string; signature: string }) =>
        answering(async () => {
          const u = await access.siwe.authenticate(args.message, args.signature)
          const { token, expiresAt } = await access.sessions.issue(u)
          const row = await findUser(db, u.id)
          return { token, expiresAt, user: { ...row!, isAdmin: access.isAdminWallet(u.walletAddress) } }
        }),
      submitJob: (_: unknown, args: { input: GqlSubmitInput }, ctx: GqlContext) =>
        answering(async () => (await access.submitPolicy.submit(ctx.caller, [toSubmitInput(args.input)], { batch: false }))[0]!),
      submitJobs: (_: unknown, args: { jobs: GqlSubmitInput[] }, ctx: GqlContext) =>
        answering(() => access.submitPolicy.submit(ctx.caller, args.jobs.map(toSubmitInput), { batch: true })),
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
