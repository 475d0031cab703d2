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
  const release = await lockSlot(dbHandle)
  let conn: Awaited<ReturnType<DbHandle['client']['reserve']>>
  try {
    conn = await dbHandle.client.reserve()
  } catch (err) {
    release()
    throw err
  }
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
    release()
  }
}

/**
 * Why lock holders are limited to one connection less than the pool: a holder keeps its reserved
 * connection for the whole run and needs another one from the same pool for its queries. With as many
 * holders as connections (two chains' watchChain and deployMulticall3 in a pool of 3) every connection was
 * reserved and every holder waited for a free one: the child's chain jobs hung for good. Past the limit, a
 * holder waits here, in the process, before it reserves anything, so one connection always stays free and
 * every holder's queries get it in turn.
 */
const slots = new WeakMap<DbHandle, { free: number; waiting: (() => void)[] }>()

async function lockSlot(dbHandle: DbHandle): Promise<() => void> {
  let s = slots.get(dbHandle)
  if (!s) {
    s = { free: Math.max(1, (dbHandle.client.options.max ?? 10) - 1), waiting: [] }
    slots.set(dbHandle, s)
  }
  const slot = s
  if (slot.free > 0) slot.free--
  else await new Promise<void>((resolve) => slot.waiting.push(resolve))
  let released = false
  return () => {
    if (released) return
    released = true
    const next = slot.waiting.shift()
    if (next) next()
    else slot.free++
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
