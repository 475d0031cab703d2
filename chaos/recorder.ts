import { randomUUID } from 'node:crypto'
import { sql } from 'drizzle-orm'
import { z } from 'zod'
import { runQuery } from '../src/server/db/client'
import { isTransientDbError } from '../src/server/workers/queue/transient'
import { defineJob } from '../src/server/workers/jobs/types'
import type { ServerApp } from '../src/server/serverApp'

/**
 * The fault suite's job type, registered through the public jobModules option. Every run writes a row
 * to chaos_runs (job id, attempt, server, pid, the job's due, start, and the engine's reason for running it
 * again, last_error) before it does its work, and its end and outcome after: a run cut short by a kill is a row without an end. Times are this process's clock;
 * every process of the suite runs on one machine, so they compare with each other and with the driver's.
 *
 * The writes ride out a lost database (a restart, a terminated connection, a partition): they are retried
 * until they land, so a run that happened is always on record unless its process was killed. The end is
 * written even after the signal fired (in the background), so an aborted run records when it stopped.
 */

const RETRY_FOR_MS = 120_000

/** Marks what the run was asked to do, for the scenarios that need it. */
const dataSchema = z.object({
  /** How long the run holds (a timer that honours the signal). */
  ms: z.number().int().min(0).max(600_000).default(0),
  /** Return a result Postgres cannot store as it is (NUL, lone surrogate): the engine must clean it. */
  unstorable: z.boolean().default(false),
  /** Free text to find a scenario's jobs by. */
  batch: z.string().max(64).default(''),
})

export const recordJob = defineJob({
  type: 'chaosRecord',
  dataSchema,
  async run({ serverApp, job, signal }) {
    const server = process.env.CHAOS_SERVER ?? 'unknown'
    const startedAt = new Date()
    // A connection lost right after the COMMIT (a restart, a terminated backend) looks like a failure: the
    // retry must find the row already there, not add a second one that never gets an end.
    const runKey = randomUUID()
    await retrying(signal, () =>
      runQuery(
        serverApp.db,
        sql`
        INSERT INTO chaos_runs (run_key, job_id, attempt, server, pid, due, started_at, last_error)
        VALUES (${runKey}, ${job.id}, ${job.attempt}, ${server}, ${process.pid}, ${job.due.toISOString()}, ${startedAt.toISOString()}, ${job.lastError})
        ON CONFLICT (run_key) DO NOTHING`,
      ),
    )
    const outcome = await hold(job.data.ms, signal)
    const ended = writeEnd(serverApp, runKey, outcome)
    if (outcome !== 'ok') {
      // Stopped by the engine: the end lands whenever the database answers; the run is over either way.
      void ended.catch(() => {})
      throw signal.reason
    }
    await ended
    return job.data.unstorable ? { text: 'nul\u0000 and a lone surrogate \ud800' } : { pid: process.pid }
  },
})

/** A job type only the newer server of the rolling-deploy scenario registers. */
export const newerRecordJob = defineJob({ ...recordJob, type: 'chaosRecordNew' })

/**
 * The recorder under a cluster-wide `concurrency: 1` (scenario 1): its runs, across both servers and every
 * kill and restart, must never overlap, whichever job they belong to.
 */
export const serialRecordJob = defineJob({ ...recordJob, type: 'chaosSerial', concurrency: 1 })

export const jobs = process.env.CHAOS_WITH_NEW_TYPE === 'true' ? [recordJob, serialRecordJob, newerRecordJob] : [recordJob, serialRecordJob]

/** 'ok' after `ms`, or 'aborted: <reason>' as soon as the signal fires. */
function hold(ms: number, signal: AbortSignal): Promise<string> {
  if (signal.aborted) return Promise.resolve(abortedOutcome(signal))
  if (ms === 0) return Promise.resolve('ok')
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve('ok'), ms)
    signal.addEventListener('abort', () => {
      clearTimeout(t)
      resolve(abortedOutcome(signal))
    })
  })
}

const abortedOutcome = (signal: AbortSignal) => `aborted: ${String((signal.reason as Error | undefined)?.message ?? signal.reason)}`.slice(0, 200)

function writeEnd(serverApp: ServerApp, runKey: string, outcome: string): Promise<unknown> {
  const endedAt = new Date().toISOString()
  return retrying(null, () => runQuery(serverApp.db, sql`UPDATE chaos_runs SET ended_at = ${endedAt}, outcome = ${outcome} WHERE run_key = ${runKey}`))
}

/** Retries `op` on connection errors for up to two minutes; `signal` (when given) stops the retrying. */
async function retrying<T>(signal: AbortSignal | null, op: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + RETRY_FOR_MS
  for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
    try {
      return await op()
    } catch (err) {
      if (!isTransientDbError(err) || Date.now() > deadline) throw err
      if (signal?.aborted) throw signal.reason
      await new Promise((r) => setTimeout(r, delay))
    }
  }
}
