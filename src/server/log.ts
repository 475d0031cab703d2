import pino, { type Logger } from 'pino'

export type { Logger }

/** JSON lines by default; `pretty` (LOG_PRETTY=true, as `npm run dev` sets) renders them for a terminal. */
export function createLogger(opts: { level: string; pretty?: boolean; base?: Record<string, unknown> }): Logger {
  return pino({
    level: opts.level,
    base: opts.base ?? { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    ...(opts.pretty ? { transport: { target: 'pino-pretty', options: { colorize: true } } } : {}),
  })
}
