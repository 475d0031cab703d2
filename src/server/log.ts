import pino, { type Logger } from 'pino'

export type { Logger }

/**
 * JSON lines by default; `pretty` (LOG_PRETTY=true, as `npm run dev` sets) renders them for a terminal.
 * `buffered` (the worker children) writes asynchronously: lines written while a write is in flight go
 * out together, so two lines per job do not cost two syscalls per job under load. Call
 * `flushLogger` before exiting so nothing buffered is lost.
 */
export function createLogger(opts: { level: string; pretty?: boolean; base?: Record<string, unknown>; buffered?: boolean }): Logger {
  const options = {
    level: opts.level,
    base: opts.base ?? { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  }
  if (opts.pretty) return pino({ ...options, transport: { target: 'pino-pretty', options: { colorize: true } } })
  if (opts.buffered) return pino(options, pino.destination({ dest: 1, sync: false }))
  return pino(options)
}

export function flushLogger(log: Logger): Promise<void> {
  return new Promise((resolve) => log.flush(() => resolve()))
}
