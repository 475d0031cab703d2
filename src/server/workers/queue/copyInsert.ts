import type postgres from 'postgres'
import type { WorkerJob } from '../../db/schema'
import { insertedRow, toJson } from './rows'
import type { NewJobRow } from './successor'

/** Below this many rows the one-statement INSERT is quicker than COPY's extra round trips. */
export const COPY_THRESHOLD = 500

const COLUMNS = `id, type, user_id, data, due, priority, concurrency_key, cron_schedule, auto_reschedule_on_failure,
  auto_reschedule_on_failure_delay, remove_delay, persistent, tag, attempt, max_attempts, rescheduled_from_job`

/** The submit field behind each column, to name it when Postgres refuses a COPY line (see copyErrorField). */
const FIELD_OF_COLUMN: Record<string, string> = {
  type: 'type',
  user_id: 'userId',
  data: 'data',
  due: 'due',
  priority: 'priority',
  cron_schedule: 'cronSchedule',
  auto_reschedule_on_failure: 'autoRescheduleOnFailure',
  auto_reschedule_on_failure_delay: 'autoRescheduleOnFailureDelay',
  remove_delay: 'removeDelay',
  persistent: 'persistent',
  tag: 'tag',
  max_attempts: 'maxAttempts',
}

/** COPY text format: backslash, tab, newline and carriage return are escaped; \N is NULL. */
const text = (v: string | null) =>
  v === null ? '\\N' : v.replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r'))
const num = (v: number | null) => (v === null ? '\\N' : String(v))
const bool = (v: boolean) => (v ? 't' : 'f')

/**
 * Bulk path for submitJobs: COPY is Postgres's fastest way in, several times quicker than expanding a
 * json parameter. COPY returns nothing, so the ids are drawn first from the identity sequence (in order,
 * inside the same transaction, as one array: one row per id cost several times more) and written
 * explicitly. The insert trigger fires for COPY too: one NOTIFY for the whole submission.
 *
 * `slices` yields the rows a slice at a time and may throw (validation): each slice is sent into the one
 * COPY stream before the next is produced, so validating slice n+1 overlaps Postgres ingesting slice n.
 * Any failure, a throw from `slices` or Postgres refusing a line, rejects the promise and rolls the
 * transaction back, which returns the connection to the pool: a submission is inserted whole or not at all.
 */
export async function copyJobs(client: postgres.Sql, total: number, slices: Iterable<readonly NewJobRow[]>): Promise<WorkerJob[]> {
  let invalid: unknown
  try {
    return await client.begin(async (tx) => {
      const [drawn] = await tx`
        SELECT array_agg(nextval('worker_jobs_id_seq'::regclass))::text AS ids, now()::text AS now
        FROM generate_series(1, ${total})`
      const createdAt = new Date(String(drawn!.now))
      const ids = String(drawn!.ids).slice(1, -1).split(',').map(Number)
      const query = tx.unsafe(`COPY worker_jobs (${COLUMNS}) FROM STDIN`)
      const refusedByServer = failureOf(query)
      const stream = await query.writable()
      // Set by the first failure Postgres reports, however it arrives: validating and sending stop there.
      let refused: unknown = null
      const done = Promise.race([
        new Promise<void>((resolve, reject) => {
          stream.on('error', reject)
          stream.on('finish', () => resolve())
        }),
        refusedByServer,
      ])
      done.catch((err) => {
        refused ??= err
      })
      const out: WorkerJob[] = []
      try {
        for (const slice of slices) {
          if (refused) break
          const first = out.length
          let body = ''
          slice.forEach((r, k) => {
            body += encode(ids[first + k]!, r)
            out.push(insertedRow(r, ids[first + k]!, createdAt))
          })
          stream.write(body)
          // Let the socket take the slice (and Postgres's answer in) before producing the next one.
          await new Promise((r) => setImmediate(r))
        }
      } catch (err) {
        invalid = err
        stream.destroy(err instanceof Error ? err : new Error(String(err)))
        await done.catch(() => {})
        throw err
      }
      if (refused) throw refused
      if (out.length !== total) throw new Error(`copyJobs: expected ${total} rows, got ${out.length}`)
      stream.end()
      await done
      return out
    })
  } catch (err) {
    // The caller's validation error, not the aborted COPY it caused.
    throw invalid ?? err
  }
}

/**
 * Rejects with the error postgres.js reports for `query`. Needed because of porsager/postgres#1173
 * (3.4.9 and earlier): when Postgres refuses COPY data after end() has sent CopyDone, the error only
 * reaches the query's reject, whose promise already resolved with the stream; the stream never emits
 * 'finish' or 'error', sql.begin never rolls back, and the connection stays idle in transaction
 * (aborted) for good. submitHardening.test.ts fails (hangs) if this stops working.
 */
function failureOf(query: object): Promise<never> {
  const q = query as unknown as { reject?: (err: unknown) => void }
  const reject = q.reject
  if (typeof reject !== 'function') throw new Error('copyJobs: postgres.js internals changed (Query.reject); see copyInsert.ts failureOf')
  const failed = new Promise<never>((_, fail) => {
    q.reject = (err) => {
      fail(err)
      reject(err)
    }
  })
  failed.catch(() => {})
  return failed
}

/**
 * The submit field a COPY error is about, when Postgres says where (`COPY worker_jobs, line 1000, column
 * due: …`): line n is the n-th row sent, which is jobs[n - 1]. null when the error names no line.
 */
export function copyErrorField(err: unknown): string | null {
  const where = (err as { where?: unknown } | null)?.where
  const at = typeof where === 'string' ? /COPY worker_jobs, line (\d+)(?:, column (\w+))?/.exec(where) : null
  if (!at) return null
  const column = at[2] ? FIELD_OF_COLUMN[at[2]] : undefined
  return `jobs[${Number(at[1]) - 1}]${column ? `.${column}` : ''}`
}

const encode = (id: number, r: NewJobRow) =>
  `${id}\t${text(r.type)}\t${r.userId}\t${text(toJson(r.data ?? {}))}\t${r.due.toISOString()}\t${r.priority}\t${text(r.concurrencyKey)}\t${text(r.cronSchedule)}\t${bool(r.autoRescheduleOnFailure)}\t${r.autoRescheduleOnFailureDelay}\t${r.removeDelay}\t${bool(r.persistent)}\t${text(r.tag)}\t${r.attempt}\t${num(r.maxAttempts)}\t${num(r.rescheduledFromJob)}\n`
