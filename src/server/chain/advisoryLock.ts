import type { DbHandle } from '../db/client'

/**
 * Runs `fn` while holding a session-level Postgres advisory lock, or returns `{ acquired: false }` at once
 * when another session (any worker, any server instance on this database) holds it.
 *
 * Why a session lock on a reserved connection rather than pg_try_advisory_xact_lock: the holder commits
 * several transactions (one per block range) while it runs, and the lock must span all of them. Why it is
 * still crash-safe: the lock belongs to the reserved connection, and Postgres releases it the moment that
 * connection closes, including when the process holding it is killed.
 */
export async function withTryAdvisoryLock<T>(
  dbHandle: DbHandle,
  name: string,
  fn: () => Promise<T>,
): Promise<{ acquired: true; value: T } | { acquired: false }> {
  const conn = await dbHandle.client.reserve()
  try {
    const [row] = await conn`SELECT pg_try_advisory_lock(hashtextextended(${name}, 0)) AS ok`
    if (!row?.ok) return { acquired: false }
    try {
      return { acquired: true, value: await fn() }
    } finally {
      await conn`SELECT pg_advisory_unlock(hashtextextended(${name}, 0))`
    }
  } finally {
    conn.release()
  }
}

/**
 * Like withTryAdvisoryLock, but waits for the lock (polling, so the wait ends when `signal` aborts instead
 * of blocking a connection inside pg_advisory_lock with no way to cancel it).
 */
export async function withAdvisoryLock<T>(
  dbHandle: DbHandle,
  name: string,
  fn: () => Promise<T>,
  opts: { signal?: AbortSignal; pollMs?: number } = {},
): Promise<T> {
  for (;;) {
    opts.signal?.throwIfAborted()
    const res = await withTryAdvisoryLock(dbHandle, name, fn)
    if (res.acquired) return res.value
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 250))
  }
}
