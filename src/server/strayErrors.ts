import type { Logger } from './log'

/**
 * Socket errors that reach the process with nobody to hear them. When Postgres restarts, a connection can
 * report its reset twice: postgres.js handles the first and drops its listeners as the socket closes, so
 * the runtime's second `error` event on that dead socket becomes an uncaught exception, which used to kill
 * a worker child mid-run (seen in the full fault run). Such an error belongs to a socket that is already
 * gone and to no query: it is logged and the process goes on. Anything else still ends the process (exit
 * code 1, logged first), since its state is then unknown; the manager restarts a child that exits so.
 */
const SOCKET_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNREFUSED', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH'])

export function isStraySocketError(err: unknown): boolean {
  const e = err as { code?: unknown; syscall?: unknown } | null
  if (typeof e?.code === 'string' && SOCKET_CODES.has(e.code) && typeof e.syscall === 'string') return true
  // postgres.js can run a write it had scheduled after the connection closed and its socket was dropped
  // (seen in the quick fault run during a connection termination): the queries on it were already failed
  // with CONNECTION_CLOSED, so the late write has nothing left to do.
  return err instanceof TypeError && /\bsocket\.write\b/.test(err.message) && /[\\/]postgres[\\/]src[\\/]connection\.js/.test(err.stack ?? '')
}

export function guardStrayErrors(log: Logger, exit: (code: number) => void = (c) => process.exit(c)): void {
  const onError = (kind: string) => (err: unknown) => {
    if (isStraySocketError(err)) {
      log.warn({ err }, `socket error outside any query ignored (${kind}; its connection is already closed)`)
      return
    }
    log.fatal({ err }, `${kind}: exiting`)
    exit(1)
  }
  process.on('uncaughtException', onError('uncaught'))
  process.on('unhandledRejection', onError('unhandled rejection'))
}
