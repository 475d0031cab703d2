import { and, eq, inArray, isNull, sql } from 'drizzle-orm'
import { z } from 'zod'
import type { Database, Executor, Transaction } from '../../db/client'
import { type WorkerJob, workerJobs } from '../../db/schema'
import { isValidCron, nextCronRun } from '../cron'
import type { JobRegistry } from '../jobs/types'
import { insertJobs, lockTags } from './insert'
import type { NewJobRow } from './successor'

export const DEFAULT_REMOVE_DELAY_SECONDS = 7 * 24 * 3600
/** Every job is bounded (as River's default): retries and interruptions stop here unless the submitter says otherwise. */
export const DEFAULT_MAX_ATTEMPTS = 25

/** What callers pass to submitJob. Delays are in seconds, as in the spec. */
export const submitJobInput = z
  .object({
    type: z.string().min(1),
    userId: z.number().int().min(0).default(0),
    data: z.unknown().default({}),
    due: z.coerce.date().optional(),
    cronSchedule: z
      .string()
      .refine(isValidCron, { message: 'expected a 5- or 6-field cron expression with a future run' })
      .nullish(),
    autoRescheduleOnFailure: z.boolean().default(false),
    autoRescheduleOnFailureDelay: z.number().int().min(0, { message: 'must be >= 0 seconds' }).default(0),
    removeDelay: z.number().int().min(0, { message: 'must be >= 0 seconds' }).default(DEFAULT_REMOVE_DELAY_SECONDS),
    persistent: z.boolean().default(false),
    /** At most one pending job per tag: submitting a new one cancels the pending one. */
    tag: z.string().min(1).max(200).nullish(),
    maxAttempts: z.number().int().min(1).nullish(),
  })
  .strict()

export type SubmitJobInput = z.input<typeof submitJobInput>

export class JobInputError extends Error {
  constructor(
    readonly field: string,
    detail: string,
  ) {
    super(`Invalid job input: ${field}: ${detail}`)
    this.name = 'JobInputError'
  }
}

const fieldOf = (prefix: string, path: readonly PropertyKey[]) =>
  [prefix, ...path.map(String)].filter(Boolean).join('.').replace(/\.(\d+)(?=\.|$)/g, '[$1]')

/** Validates one input against the common schema and the job type's own data schema. Throws JobInputError. */
export function validateJobInput(registry: JobRegistry, input: unknown, prefix = '', now = new Date()): NewJobRow {
  const parsed = submitJobInput.safeParse(input)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!
    throw new JobInputError(fieldOf(prefix, issue.path) || 'input', issue.message)
  }
  const v = parsed.data
  const def = registry[v.type]
  if (!def) throw new JobInputError(fieldOf(prefix, ['type']), `unknown job type "${v.type}"`)
  const data = def.dataSchema.safeParse(v.data)
  if (!data.success) {
    const issue = data.error.issues[0]!
    throw new JobInputError(fieldOf(prefix, ['data', ...issue.path]), issue.message)
  }
  const cronSchedule = v.cronSchedule ?? null
  return {
    type: v.type,
    userId: v.userId,
    data: data.data ?? {},
    // A cron job submitted without a due time first runs at its next cron time.
    due: v.due ?? (cronSchedule ? nextCronRun(cronSchedule, now) : now),
    cronSchedule,
    autoRescheduleOnFailure: v.autoRescheduleOnFailure,
    autoRescheduleOnFailureDelay: v.autoRescheduleOnFailureDelay,
    removeDelay: v.removeDelay,
    persistent: v.persistent,
    tag: v.tag ?? null,
    attempt: 1,
    maxAttempts: v.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
    rescheduledFromJob: null,
  }
}

/** Validates a batch; fields are named `jobs[i].…`. Nothing is written if any input is bad. */
export function validateJobInputs(registry: JobRegistry, inputs: readonly unknown[]): NewJobRow[] {
  if (!Array.isArray(inputs)) throw new JobInputError('jobs', 'expected an array')
  const now = new Date()
  const rows = inputs.map((input, i) => validateJobInput(registry, input, `jobs[${i}]`, now))
  const seen = new Set<string>()
  rows.forEach((r, i) => {
    if (!r.tag) return
    if (seen.has(r.tag)) throw new JobInputError(`jobs[${i}].tag`, `tag "${r.tag}" appears twice in one submission`)
    seen.add(r.tag)
  })
  return rows
}

/**
 * Validates `inputs` a slice at a time, for the streaming COPY path: fields are named `jobs[i].…` as in
 * validateJobInputs. Only used for untagged submissions, so the duplicate-tag check has nothing to do.
 */
export function* validateJobInputSlices(registry: JobRegistry, inputs: readonly unknown[], size = 2_000): Generator<NewJobRow[]> {
  const now = new Date()
  for (let i = 0; i < inputs.length; i += size) {
    const slice: NewJobRow[] = []
    for (let k = i; k < Math.min(i + size, inputs.length); k++) slice.push(validateJobInput(registry, inputs[k], `jobs[${k}]`, now))
    yield slice
  }
}

/**
 * Inserts validated rows in one transaction: the caller's `tx` when given, so a rolled-back caller leaves
 * no job behind. Pending jobs that share a tag with a new one are cancelled, with a result naming the job
 * that replaced them.
 */
export async function insertValidatedJobs(
  db: Database,
  rows: readonly NewJobRow[],
  opts: { tx?: Transaction } = {},
): Promise<WorkerJob[]> {
  if (rows.length === 0) return []
  const tags = rows.flatMap((r) => (r.tag ? [r.tag] : []))
  if (tags.length === 0) return insertJobs(opts.tx ?? db, rows)
  const work = (tx: Executor) => insertReplacingTags(tx, rows, tags)
  return opts.tx ? work(opts.tx) : db.transaction(work)
}

async function insertReplacingTags(tx: Executor, rows: readonly NewJobRow[], tags: string[]): Promise<WorkerJob[]> {
  await lockTags(tx, tags)
  const pending = and(inArray(workerJobs.tag, tags), isNull(workerJobs.started), isNull(workerJobs.finished))
  const cancelled = await tx
    .update(workerJobs)
    .set({ finished: sql`now()`, success: false, removeAt: sql`now() + make_interval(secs => ${workerJobs.removeDelay})`, updatedAt: sql`now()` })
    .where(pending)
    .returning({ id: workerJobs.id, tag: workerJobs.tag })
  const inserted = await insertJobs(tx, rows)
  // The cancelled rows name their replacement, which only has an id once it is inserted.
  for (const c of cancelled) {
    const by = inserted.find((j) => j.tag === c.tag)!
    await tx
      .update(workerJobs)
      .set({ result: { error: `cancelled: replaced by job ${by.id}` } })
      .where(eq(workerJobs.id, c.id))
  }
  return inserted
}
