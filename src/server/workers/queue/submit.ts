import { sql } from 'drizzle-orm'
import { z } from 'zod'
import { type Database, type Executor, runQuery, type Transaction } from '../../db/client'
import type { WorkerJob } from '../../db/schema'
import { isValidCron, nextCronRun } from '../cron'
import type { JobRegistry } from '../jobs/types'
import { COPY_THRESHOLD, copyErrorField, copyJobs } from './copyInsert'
import { INSERT_CHUNK, insertJobs, lockTags } from './insert'
import { concurrencyKeyOf } from './limits'
import { findUnstorable, isStorableText, toJson } from './rows'
import { PENDING } from './states'
import type { NewJobRow } from './successor'

export const DEFAULT_REMOVE_DELAY_SECONDS = 7 * 24 * 3600
/** Every job is bounded (as River's default): retries and interruptions stop here unless the submitter says otherwise. */
export const DEFAULT_MAX_ATTEMPTS = 25
/**
 * The built-in jobs' priority (seeded schedules, their successors, submitBuiltInJob): ahead of every job
 * submitted at the default 0, so a user backlog delays a built-in job by one claim at most.
 */
export const BUILT_IN_PRIORITY = -10
/** Tags of the built-in schedules (`system:watchChain`, …); submitJob refuses them, so no caller can take one over. */
export const SYSTEM_TAG_PREFIX = 'system:'
export const systemTag = (type: string) => `${SYSTEM_TAG_PREFIX}${type}`

/**
 * The due times we accept. Postgres stores 4713 BC .. 294276 AD, JavaScript writes years past 9999 as
 * "+010000-…", and no job is meant for before 1970: a sane window, checked before any SQL runs.
 */
export const MIN_DUE = new Date('1970-01-01T00:00:00.000Z')
export const MAX_DUE = new Date('9999-12-31T23:59:59.999Z')
const DUE_RANGE = 'must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z'
const INT4_MAX = 2_147_483_647

// A date, or a date-time with a zone: without one, "2030-01-01T00:00" would depend on the server's time zone.
const ISO = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|([+-])(\d{2}):(\d{2})))?$/i
const ISO_EXPECTED = 'expected an ISO 8601 date-time with a time zone (e.g. 2030-01-01T00:00:00Z) or a date (2030-01-01, UTC)'

/**
 * Parses an ISO 8601 date or date-time strictly: every component must exist as written (no 2030-02-31
 * rolled over into March, no hour 24), unlike Date.parse / z.coerce.date. Returns the Date, or why not.
 */
function parseIso(value: string): Date | string {
  const m = ISO.exec(value)
  if (!m) return ISO_EXPECTED
  const [year, month, day, hour = 0, minute = 0, second = 0] = m.slice(1, 7).map((p) => (p === undefined ? undefined : Number(p)))
  const ms = m[7] ? Number(m[7].slice(0, 3).padEnd(3, '0')) : 0
  const offsetMin = m[9] ? (m[9] === '-' ? -1 : 1) * (Number(m[10]) * 60 + Number(m[11])) : 0
  if (m[9] && (Number(m[10]) > 23 || Number(m[11]) > 59)) return `${ISO_EXPECTED}: no such time zone offset`
  if (hour! > 23 || minute! > 59 || second! > 59) return `${ISO_EXPECTED}: no such time of day`
  const d = new Date(0)
  // setUTCFullYear, not Date.UTC: Date.UTC reads years 0..99 as 1900..1999.
  d.setUTCFullYear(year!, month! - 1, day!)
  if (d.getUTCFullYear() !== year || d.getUTCMonth() !== month! - 1 || d.getUTCDate() !== day) return `no such date: ${m[1]}-${m[2]}-${m[3]}`
  d.setUTCHours(hour!, minute!, second!, ms)
  return new Date(d.getTime() - offsetMin * 60_000)
}

/** A strictly valid ISO 8601 date-time or date as a Date, or null. Shared with the GraphQL DateTime scalar. */
export function parseIsoDateTime(value: string): Date | null {
  const d = parseIso(value)
  return typeof d === 'string' ? null : d
}

/** `due` as a Date (or undefined: not given), or a message saying what is wrong with it. */
function toDue(value: unknown): Date | undefined | string {
  if (value === undefined || value === null) return undefined
  const d =
    value instanceof Date ? value : typeof value === 'string' ? parseIso(value) : typeof value === 'number' ? new Date(value) : ISO_EXPECTED
  if (typeof d === 'string') return d
  if (Number.isNaN(d.getTime())) return 'expected a valid date'
  return d < MIN_DUE || d > MAX_DUE ? DUE_RANGE : d
}

const int4 = (min: number, minMessage?: string) =>
  z.number().int().min(min, minMessage ? { message: minMessage } : undefined).max(INT4_MAX, { message: `must be at most ${INT4_MAX}` })

/** What callers pass to submitJob. Delays are in seconds, as in the spec. */
export const submitJobInput = z
  .object({
    type: z.string().min(1),
    userId: int4(0).default(0),
    data: z.unknown().default({}),
    /** A Date, an ISO 8601 string (strictly parsed, with a zone) or epoch milliseconds; null means not given. */
    due: z
      .unknown()
      .transform((v, ctx) => {
        const due = toDue(v)
        if (typeof due !== 'string') return due
        ctx.addIssue({ code: 'custom', message: due })
        return z.NEVER
      })
      .optional(),
    cronSchedule: z
      .string()
      .refine(isStorableText, { message: 'contains a character Postgres cannot store (NUL or a lone surrogate)' })
      .refine(isValidCron, { message: 'expected a 5- or 6-field cron expression with a future run' })
      .nullish(),
    autoRescheduleOnFailure: z.boolean().default(false),
    autoRescheduleOnFailureDelay: int4(0, 'must be >= 0 seconds').default(0),
    removeDelay: int4(0, 'must be >= 0 seconds').default(DEFAULT_REMOVE_DELAY_SECONDS),
    persistent: z.boolean().default(false),
    /** At most one pending job per tag and user: submitting a new one cancels that user's pending one. */
    tag: z
      .string()
      .min(1)
      .max(200)
      .refine(isStorableText, { message: 'contains a character Postgres cannot store (NUL or a lone surrogate)' })
      .refine((t) => !t.startsWith(SYSTEM_TAG_PREFIX), { message: `is reserved: tags starting with "${SYSTEM_TAG_PREFIX}" belong to the built-in jobs` })
      .nullish(),
    maxAttempts: int4(1).nullish(),
    /** Lower runs first; 0 by default. Negative priorities are for the server's own jobs and admins (submitPolicy.ts). */
    priority: z.number().int().min(-32_768).max(32_767).default(0),
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

/**
 * The path (relative to the data: `.a.__proto__`) of the first own "__proto__" key in submitted data
 * (JSON.parse creates such keys; copying the object, as a zod schema does, turns one into a prototype
 * and the key vanishes), or null.
 */
function findProtoKey(value: unknown, depth = 0): string | null {
  if (value === null || typeof value !== 'object' || depth > 64) return null
  // The path is put together on the way back from a hit, so a clean walk builds no strings.
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = findProtoKey(value[i], depth + 1)
      if (found !== null) return `[${i}]${found}`
    }
    return null
  }
  for (const key of Object.keys(value)) {
    if (key === '__proto__') return '.__proto__'
    const found = findProtoKey((value as Record<string, unknown>)[key], depth + 1)
    if (found !== null) return `.${key}${found}`
  }
  return null
}

/** Validates one input against the common schema and the job type's own data schema. Throws JobInputError. */
export function validateJobInput(registry: JobRegistry, input: unknown, prefix = '', now = new Date()): NewJobRow {
  const parsed = submitJobInput.safeParse(input)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!
    throw new JobInputError(fieldOf(prefix, issue.path) || 'input', issue.message)
  }
  const v = parsed.data
  const def = registry[v.type]
  if (!def) throw new JobInputError(fieldOf(prefix, ['type']), `unknown job type ${JSON.stringify(v.type)}`)
  // The path is built only on a hit: fieldOf costs more than the walk of a small object (bulk submits).
  const proto = findProtoKey(v.data)
  if (proto !== null) throw new JobInputError(`${fieldOf(prefix, ['data'])}${proto}`, 'a "__proto__" key is refused: a schema would drop it silently')
  const data = def.dataSchema.safeParse(v.data)
  if (!data.success) {
    const issue = data.error.issues[0]!
    throw new JobInputError(fieldOf(prefix, ['data', ...issue.path]), issue.message)
  }
  // What will be stored (the schema's output) must be something jsonb accepts, or the whole statement fails.
  // Named relative to the input first (`data.x`): the prefix (`jobs[3].`) is only put in front on a hit.
  const bad = findUnstorable(data.data ?? {}, 'data')
  if (bad) throw new JobInputError(prefix ? `${fieldOf(prefix, [])}.${bad.path}` : bad.path, bad.reason)
  const cronSchedule = v.cronSchedule ?? null
  let concurrencyKey: string | null
  try {
    concurrencyKey = concurrencyKeyOf(def, data.data)
  } catch (err) {
    throw new JobInputError(fieldOf(prefix, ['data']), (err as Error).message)
  }
  return {
    type: v.type,
    userId: v.userId,
    data: data.data ?? {},
    // A cron job submitted without a due time first runs at its next cron time.
    due: v.due ?? (cronSchedule ? nextCronRun(cronSchedule, now) : now),
    priority: v.priority,
    concurrencyKey,
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
  const now = new Date()
  const rows = inputs.map((input, i) => validateJobInput(registry, input, `jobs[${i}]`, now))
  const seen = new Set<string>()
  rows.forEach((r, i) => {
    if (!r.tag) return
    const key = `${r.userId}:${r.tag}`
    if (seen.has(key)) throw new JobInputError(`jobs[${i}].tag`, `tag ${JSON.stringify(r.tag)} appears twice for user ${r.userId} in one submission`)
    seen.add(key)
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
 * Postgres refusing a value (SQLSTATE class 22, data exception: a date out of range, a NUL, a bad
 * escape) is about the caller's input even where validation missed it: it becomes a JobInputError naming
 * the row and column when a COPY error says which, else `field`. Anything else passes through unchanged.
 */
export function databaseInputError(err: unknown, field: string): unknown {
  const e = err as { code?: unknown; message?: unknown } | null
  if (typeof e?.code !== 'string' || !e.code.startsWith('22')) return err
  return new JobInputError(copyErrorField(err) ?? field, `refused by the database: ${String(e.message)}`)
}

export interface SubmitOptions {
  /** Enrols the insert in the caller's transaction: a rolled-back caller leaves no job behind. */
  tx?: Transaction
}

/** Submitting jobs: what resolvers and job handlers use (serverApp.workerManager). */
export interface JobSubmitter {
  submitJob(input: SubmitJobInput, opts?: SubmitOptions): Promise<WorkerJob>
  submitJobs(inputs: readonly SubmitJobInput[], opts?: SubmitOptions): Promise<WorkerJob[]>
}

/** The one place that validates and inserts submitted jobs; serverApp and the manager delegate here. */
export function createSubmitter(db: Database, registry: JobRegistry): JobSubmitter {
  return {
    submitJob: (input, opts) => submitJob(db, registry, input, { tx: opts?.tx }),
    submitJobs: (inputs, opts) => submitJobs(db, registry, inputs, opts),
  }
}

/** What only the engine itself passes to submitJob (not part of the JobSubmitter API). */
export interface EngineSubmitOptions extends SubmitOptions {
  /** The job this one reruns (rerunJob in cancel.ts); submitted jobs otherwise have none. */
  rescheduledFromJob?: number
}

// async, so a validation error is a rejected promise like a database error, never a synchronous throw.
export async function submitJob(db: Database, registry: JobRegistry, input: SubmitJobInput, opts: EngineSubmitOptions = {}): Promise<WorkerJob> {
  const row = validateJobInput(registry, input)
  if (opts.rescheduledFromJob !== undefined) row.rescheduledFromJob = opts.rescheduledFromJob
  try {
    return (await insertRows(db, [row], opts))[0]!
  } catch (err) {
    throw databaseInputError(err, 'input')
  }
}

/**
 * All or nothing. 500 or more untagged jobs outside a caller's transaction stream into one COPY while
 * they are validated (copyInsert.ts); everything else is validated whole, then INSERTed (insertRows).
 */
export async function submitJobs(
  db: Database,
  registry: JobRegistry,
  inputs: readonly SubmitJobInput[],
  opts: SubmitOptions = {},
): Promise<WorkerJob[]> {
  if (!Array.isArray(inputs)) throw new JobInputError('jobs', 'expected an array')
  try {
    // COPY has no ON CONFLICT (tags need it, and the replacing of pending rows), and a drizzle
    // transaction handle does not expose its connection: those take the INSERT path.
    const untagged = inputs.every((i) => (i as { tag?: unknown } | null)?.tag == null)
    if (!opts.tx && untagged && inputs.length >= COPY_THRESHOLD) {
      return await copyJobs(db.$client, inputs.length, validateJobInputSlices(registry, inputs))
    }
    return await insertRows(db, validateJobInputs(registry, inputs), opts)
  } catch (err) {
    throw databaseInputError(err, 'jobs')
  }
}

/**
 * Submits a built-in job (user 0, tag `system:<type>`, which submitJob refuses to anyone else): the
 * manager's once-per-boot jobs. Like any tagged submit, it replaces the pending row holding that tag.
 */
export async function submitBuiltInJob(
  db: Database,
  registry: JobRegistry,
  input: Omit<SubmitJobInput, 'tag' | 'userId'>,
  /** One row per chain: `system:deployMulticall3:8453`. */
  tagSuffix = '',
): Promise<WorkerJob> {
  const row = { ...validateJobInput(registry, input), userId: 0, tag: systemTag(input.type + tagSuffix), priority: BUILT_IN_PRIORITY }
  return (await insertRows(db, [row], {}))[0]!
}

/**
 * Inserts validated rows in one transaction: the caller's `tx` when given, else one of its own when the
 * rows take more than one statement (tags: lock, cancel, insert; or more than INSERT_CHUNK rows). A single
 * untagged INSERT is its own transaction and runs as a prepared statement on the pool.
 */
async function insertRows(db: Database, rows: readonly NewJobRow[], opts: SubmitOptions): Promise<WorkerJob[]> {
  if (rows.length === 0) return []
  const tagged = rows.some((r) => r.tag !== null)
  const work = (tx: Executor) => (tagged ? insertReplacingTags(tx, rows) : insertJobs(tx, rows))
  if (opts.tx) return work(opts.tx)
  if (!tagged && rows.length <= INSERT_CHUNK) return insertJobs(db, rows)
  return db.transaction(work)
}

/**
 * Pending jobs of the same user and tag as a new one are cancelled (finished, cancelled_at, success = false) with a
 * result naming the job that replaced them. Another user's row with the same tag is never touched.
 */
async function insertReplacingTags(tx: Executor, rows: readonly NewJobRow[]): Promise<WorkerJob[]> {
  await lockTags(tx, rows)
  const keys = rows.flatMap((r) => (r.tag === null ? [] : [{ user_id: r.userId, tag: r.tag }]))
  const cancelled = await runQuery(
    tx,
    sql`
    UPDATE worker_jobs AS j
    SET finished = now(), cancelled_at = now(), success = false, remove_at = now() + make_interval(secs => j.remove_delay), updated_at = now()
    FROM jsonb_to_recordset(${toJson(keys)}::text::jsonb) AS k(user_id integer, tag text)
    WHERE j.user_id = k.user_id AND j.tag = k.tag AND ${PENDING} -- k has no started/finished: these are j's
    RETURNING j.id, j.user_id, j.tag`,
  )
  const inserted = await insertJobs(tx, rows)
  if (cancelled.length === 0) return inserted
  // The cancelled rows name their replacement, which only has an id once it is inserted.
  const byKey = new Map(inserted.map((j) => [`${j.userId}:${j.tag}`, j.id]))
  const names = cancelled.map((c) => ({ id: Number(c.id), by: byKey.get(`${c.user_id}:${c.tag}`)! }))
  await runQuery(
    tx,
    sql`
    UPDATE worker_jobs AS j SET result = jsonb_build_object('error', 'cancelled: replaced by job ' || n.by)
    FROM jsonb_to_recordset(${toJson(names)}::text::jsonb) AS n(id bigint, by bigint)
    WHERE j.id = n.id`,
  )
  return inserted
}
