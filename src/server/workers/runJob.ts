import type { WorkerJob } from '../db/schema'
import type { Logger } from '../log'
import { redactUrls } from '../redact'
import type { ServerApp } from '../serverApp'
import type { JobRegistry } from './jobs/types'
import type { Outcome } from './queue/finish'

export class JobTimeoutError extends Error {
  constructor(ms: number) {
    super(`job timed out after ${ms} ms`)
    this.name = 'JobTimeoutError'
  }
}

/**
 * An abort that is not the job's fault: the worker is being stopped, or it lost the lease on the row.
 * The outcome is recorded as an interruption (back to pending, see queue/rescue.ts), not a failure.
 */
export class JobInterruptedError extends Error {
  constructor(reason: string) {
    super(reason)
    this.name = 'JobInterruptedError'
  }
}

/**
 * The signal's reason when the job was cancelled (cancelJob set its row's cancelled_at). Unlike an
 * interruption, a cancel does not end the run here: the handler is asked to stop, and whatever it then
 * returns or throws is kept in the cancelled row's result (see queue/finish.ts).
 */
export class JobCancelledError extends Error {
  constructor(message = 'the job was cancelled') {
    super(message)
    this.name = 'JobCancelledError'
  }
}

/**
 * A failure result that a person reading worker_jobs.result can act on. URLs in it are cut to
 * scheme://host[:port] (redact.ts): an RPC error quotes its URL, and API keys live in the URL.
 */
export function errorResult(err: unknown): { error: string; name?: string; stack?: string } {
  if (err instanceof Error) {
    return { error: redactUrls(err.message), name: err.name, stack: err.stack && redactUrls(err.stack.split('\n').slice(0, 8).join('\n')) }
  }
  return { error: redactUrls(String(err)) }
}

/**
 * A job being run: `abort` stops it from outside (forced shutdown, lost lease, timeout) and ends the run
 * at once, whether the handler honours its signal or not. `cancel` only fires the handler's signal: the
 * run ends when the handler does (or at its timeout), so its real outcome is recorded.
 */
export interface RunningJob {
  job: WorkerJob
  abort(reason: Error): void
  cancel(reason: Error): void
}

/**
 * Runs one claimed job through the registry and turns whatever happens into an Outcome; it never throws.
 * The data is validated again here: a row inserted by hand (psql) never went through submitJob.
 * `log` carries the workerId already (its base fields), so every job line names its worker.
 */
export function runJob(
  serverApp: ServerApp,
  registry: JobRegistry,
  job: WorkerJob,
  log: Logger,
  opts: { defaultTimeoutMs: number },
): { running: RunningJob; outcome: Promise<Outcome> } {
  // The AbortController is made only when the handler reads `signal`; until then an abort is remembered.
  let controller: AbortController | undefined
  let abortReason: Error | undefined
  const signal = () => {
    if (!controller) {
      controller = new AbortController()
      if (abortReason) controller.abort(abortReason)
    }
    return controller.signal
  }
  // Why a hand-made rejection instead of listening on the signal: a handler that ignores its signal must
  // still not hold the job past its timeout, and one listener per job was a visible cost at 10k jobs/s.
  let rejectAborted: (reason: Error) => void = () => {}
  const aborted = new Promise<never>((_, reject) => {
    rejectAborted = reject
  })
  const fire = (reason: Error) => {
    abortReason ??= reason
    controller?.abort(reason)
  }
  const abort = (reason: Error) => {
    fire(reason)
    rejectAborted(reason)
  }
  return { running: { job, abort, cancel: fire }, outcome: execute(serverApp, registry, job, log, signal, aborted, abort, opts.defaultTimeoutMs) }
}

async function execute(
  serverApp: ServerApp,
  registry: JobRegistry,
  job: WorkerJob,
  parentLog: Logger,
  signal: () => AbortSignal,
  aborted: Promise<never>,
  abort: (reason: Error) => void,
  defaultTimeoutMs: number,
): Promise<Outcome> {
  const started = performance.now()
  // The start and end lines carry jobId and type themselves; the handler's child logger is only built if
  // the handler asks for it (most jobs at high rates never log, and a child logger per job showed up).
  parentLog.info({ jobId: job.id, type: job.type, attempt: job.attempt }, 'job started')
  let handlerLog: Logger | undefined
  let outcome: Outcome
  let timer: ReturnType<typeof setTimeout> | undefined
  try {
    const def = registry[job.type]
    if (!def) throw new Error(`unknown job type "${job.type}"`)
    const data = def.dataSchema.safeParse(job.data ?? {})
    if (!data.success) {
      const issue = data.error.issues[0]!
      throw new Error(`invalid job data: data${issue.path.map((p: PropertyKey) => `.${String(p)}`).join('')}: ${issue.message}`)
    }
    const ms = def.timeoutMs ?? defaultTimeoutMs
    timer = setTimeout(() => abort(new JobTimeoutError(ms)), ms)
    const params = {
      serverApp,
      get log() {
        handlerLog ??= parentLog.child({ jobId: job.id, type: job.type })
        return handlerLog
      },
      job: { ...job, data: data.data },
      get signal() {
        return signal()
      },
    }
    const result = await Promise.race([def.run(params), aborted])
    outcome = { job, success: true, result: result ?? null }
  } catch (err) {
    outcome = { job, success: false, result: errorResult(err) }
    if (err instanceof JobInterruptedError) {
      outcome.interrupted = { reason: err.message, rerun: registry[job.type]?.rerunOnInterrupt !== false }
    }
  } finally {
    if (timer) clearTimeout(timer)
  }
  const durationMs = Math.round((performance.now() - started) * 1000) / 1000
  outcome.runMs = durationMs
  const fields = { jobId: job.id, type: job.type, success: outcome.success, durationMs }
  if (outcome.success) parentLog.info(fields, 'job finished')
  else parentLog.warn({ ...fields, error: (outcome.result as { error: string }).error }, 'job finished')
  return outcome
}
