import { GraphQLError } from 'graphql'
import type { WorkerJob } from '../db/schema'
import type { ServerApp } from '../serverApp'
import { JobInputError, type SubmitJobInput } from '../workers/queue/submit'
import { findJob, listJobs } from './jobQueries'
import type { JobStatus } from '../workers/queue/states'
import { statusOf } from '../workers/queue/states'
import { DateTimeScalar, JSONScalar } from './scalars'

/**
 * Resolvers. Writes only go through serverApp.workerManager (zod validation, one transaction, NOTIFY);
 * reads use drizzle with bound values.
 *
 * AUTHENTICATION IS OUT OF SCOPE FOR NOW: any caller may submit and read any job. Before exposing this
 * endpoint, put the caller in the GraphQL context (see handler.ts) and check it here (e.g. userId must be
 * the caller's own, reads limited to the caller's jobs).
 */

export const MAX_JOBS_LIMIT = 500

/** The GraphQL input as graphql-js hands it over: omitted fields are absent, explicit nulls are null. */
type GqlSubmitInput = { [K in keyof SubmitJobInput]?: unknown }

const badInput = (field: string, message: string) => new GraphQLError(message, { extensions: { code: 'BAD_USER_INPUT', field } })

/** JobInputError names the field; GraphQLError keeps the message from being masked by yoga. */
async function submitting<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work()
  } catch (err) {
    if (err instanceof JobInputError) throw badInput(err.field, err.message)
    throw err // anything else is unexpected: yoga logs it and masks the message
  }
}

/**
 * Drops nulls (null means "not given", so zod's defaults apply). `due` stays a string: submit parses it
 * strictly and names the field (`due`, `jobs[3].due`) when it is not a valid date-time in range.
 */
function toSubmitInput(input: GqlSubmitInput): SubmitJobInput {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(input)) if (v !== null && v !== undefined) out[k] = v
  return out as SubmitJobInput
}

function parseId(id: string): number {
  if (!/^[1-9]\d{0,15}$/.test(id) || !Number.isSafeInteger(Number(id))) throw badInput('id', `Invalid argument id: expected a positive integer, got "${id}"`)
  return Number(id)
}

function checkLimit(limit: number | null | undefined): number {
  if (limit == null) return 50
  if (limit < 1 || limit > MAX_JOBS_LIMIT) throw badInput('limit', `Invalid argument limit: must be between 1 and ${MAX_JOBS_LIMIT}, got ${limit}`)
  return limit
}

export function createResolvers(serverApp: ServerApp) {
  return {
    JSON: JSONScalar,
    DateTime: DateTimeScalar,
    WorkerJob: {
      status: (job: WorkerJob) => statusOf(job),
    },
    Query: {
      job: (_: unknown, args: { id: string }) => findJob(serverApp.db, parseId(args.id)),
      jobs: (_: unknown, args: { type?: string | null; status?: JobStatus | null; limit?: number | null }) =>
        listJobs(serverApp.db, { type: args.type, status: args.status, limit: checkLimit(args.limit) }),
    },
    Mutation: {
      submitJob: (_: unknown, args: { input: GqlSubmitInput }) =>
        submitting(() => serverApp.workerManager.submitJob(toSubmitInput(args.input))),
      submitJobs: (_: unknown, args: { jobs: GqlSubmitInput[] }) =>
        submitting(() => serverApp.workerManager.submitJobs(args.jobs.map(toSubmitInput))),
    },
  }
}
