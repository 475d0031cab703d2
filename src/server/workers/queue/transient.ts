/**
 * Whether a database error is about the connection or the server's state rather than the statement's
 * data: such a statement may succeed as it is when retried, so a batch is retried whole instead of being
 * split to find a poison row.
 */
const TRANSIENT_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENOTFOUND',
  'CONNECT_TIMEOUT',
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  // A queue statement that missed its answer deadline (workers/queueDb.ts).
  'QUERY_TIMEOUT',
])
/** SQLSTATE classes: connection exception, transaction rollback, insufficient resources, operator intervention (shutdown, statement timeout), system error, internal error. */
const TRANSIENT_CLASSES = new Set(['08', '40', '53', '57', '58', 'XX'])

export function isTransientDbError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  if (typeof code !== 'string') return false
  if (TRANSIENT_CODES.has(code)) return true
  return /^[0-9A-Z]{5}$/.test(code) && TRANSIENT_CLASSES.has(code.slice(0, 2))
}
