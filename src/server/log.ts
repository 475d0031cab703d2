import pino, { type Logger } from 'pino'
import { redactDeep, redactUrls } from './redact'
import { isTransientDbError } from './workers/queue/transient'

export type { Logger }

/**
 * JSON lines by default (`time` in epoch milliseconds); `pretty` (LOG_PRETTY=true, as `npm run dev` sets) renders them for a terminal.
 * `buffered` (the worker children) collects the lines of one event-loop turn and writes them with a
 * single stdout write: two lines per job at tens of thousands of jobs a second made per-line writes the
 * largest CPU cost of a worker. Call `flushLogger` before exiting so nothing buffered is lost.
 */
export function createLogger(opts: { level: string; pretty?: boolean; base?: Record<string, unknown>; buffered?: boolean }): Logger {
  const options = {
    level: opts.level,
    base: opts.base ?? { pid: process.pid },
    serializers: { err: serializeError },
    // pino's default `time` (epoch milliseconds): formatting an ISO string for every line cost more than
    // the rest of the line at worker rates. pino-pretty and jq (`todate`) render it.
  }
  if (opts.pretty) return pino({ ...options, transport: { target: 'pino-pretty', options: { colorize: true } } })
  if (opts.buffered) return pino(options, batchedStdout())
  return pino(options)
}

/**
 * Errors as pino writes them, except a lost or refused database connection: that is an outage, not a
 * bug, and while the database is away every health check, claim and renewal logs one. Those are written
 * as type, code and message only (the driver's own error when a query builder wrapped it), no stack.
 * Every URL in an error is cut to scheme://host[:port] (redact.ts).
 */
function serializeError(err: unknown): unknown {
  const cause = (err as { cause?: unknown } | null)?.cause
  const outage = isTransientDbError(err) ? err : isTransientDbError(cause) ? cause : null
  // Redacted: an RPC error's message, stack, `url` and causes quote the RPC URL, where API keys live.
  if (!outage) return redactDeep(pino.stdSerializers.err(err as Error))
  const e = outage as { name?: string; code?: string; message?: string }
  return { type: e.name ?? 'Error', code: e.code, message: e.message && redactUrls(e.message) }
}

function batchedStdout() {
  let lines: string[] = []
  let scheduled = false
  const flush = (cb?: (err?: Error) => void) => {
    scheduled = false
    if (lines.length === 0) return cb?.()
    const chunk = lines.join('')
    lines = []
    process.stdout.write(chunk, () => cb?.())
  }
  return {
    write(line: string) {
      lines.push(line)
      if (!scheduled) {
        scheduled = true
        setImmediate(flush)
      }
    },
    flush,
  }
}

export function flushLogger(log: Logger): Promise<void> {
  return new Promise((resolve) => log.flush(() => resolve()))
}
