import type { z } from 'zod'
import type { WorkerJob } from '../../db/schema'
import type { Logger } from '../../log'
import type { ServerApp } from '../../serverApp'

/** What a handler receives. `signal` aborts on the job's timeout, a lost lease and a forced shutdown. */
export interface JobParams<Data = unknown> {
  serverApp: ServerApp
  log: Logger
  job: Omit<WorkerJob, 'data'> & { data: Data }
  signal: AbortSignal
}

/** One job type: its name, the schema of its data (checked at submit and again at run), a timeout and the handler. */
export interface JobDefinition<Schema extends z.ZodType = z.ZodType> {
  type: string
  dataSchema: Schema
  /**
   * Past this many milliseconds the signal aborts and the run fails with a timeout error. Without one,
   * WORKER_DEFAULT_JOB_TIMEOUT_MS applies: a hung handler must not hold a worker or a drain forever.
   */
  timeoutMs?: number
  /**
   * Whether a run interrupted by the infrastructure (its process killed, its server gone, its lease lost,
   * a forced shutdown) goes back to pending to run again (the default: at-least-once). Set false for a
   * handler that must never re-run blindly: such a job is failed with the reason instead, and only its
   * own autoRescheduleOnFailure / cron rules apply.
   */
  rerunOnInterrupt?: boolean
  /**
   * Who may submit this type through the API: 'admin' (the default: deny unless allowed) or 'user' (any
   * signed-in user, for their own account). Code on the server (resolvers, handlers) is not limited.
   */
  access?: 'admin' | 'user'
  /**
   * At most this many jobs of the type run at once, across every worker of every server. A job held back
   * stays pending (it is not claimed) and starts as soon as a slot frees (queue/limits.ts).
   */
  concurrency?: number
  /**
   * Groups the type's jobs by a key taken from their (validated) data, e.g. the sending wallet: at most
   * `keyConcurrency` (default 1) jobs of one key run at once, across every server, so a type that signs
   * transactions never races its own nonce. Computed once, at submit, into the row's concurrency_key.
   */
  concurrencyKey?: (data: z.output<Schema>) => string
  keyConcurrency?: number
  /**
   * At most `max` of the type's jobs start in any `perMs` window, across every server (an RPC provider's
   * quota). Jobs over the rate wait, pending; they never fail for it. `keyRateLimit` does the same per
   * concurrencyKey (then keyConcurrency still applies: set it as high as the key may run at once).
   */
  rateLimit?: RateLimit
  keyRateLimit?: RateLimit
  run(params: JobParams<z.output<Schema>>): Promise<unknown>
}

export interface RateLimit {
  max: number
  perMs: number
}

export type Job = JobDefinition<any>

/** The type's data type comes from its zod schema, once. */
export function defineJob<Schema extends z.ZodType>(def: JobDefinition<Schema>): JobDefinition<Schema> {
  return def
}

export type JobRegistry = Readonly<Record<string, Job>>
