import type { z } from 'zod'
import type { WorkerJob } from '../../db/schema'
import type { Logger } from '../../log'
import type { ServerApp } from '../../serverApp'

/** What a handler receives. `signal` aborts on the job type's timeout and on a forced shutdown. */
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
  /** Past this many milliseconds the signal aborts and the run fails with a timeout error. */
  timeoutMs?: number
  run(params: JobParams<z.output<Schema>>): Promise<unknown>
}

export type Job = JobDefinition<any>

/** The type's data type comes from its zod schema, once. */
export function defineJob<Schema extends z.ZodType>(def: JobDefinition<Schema>): JobDefinition<Schema> {
  return def
}

export type JobRegistry = Readonly<Record<string, Job>>
