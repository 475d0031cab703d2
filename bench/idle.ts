import { ADMIN_URL, connect, sleep, transactionCount } from './db'
import { round } from './stats'

export interface IdleLoad {
  windowSeconds: number
  transactions: number
  perSecond: number
}

/**
 * Transactions (committed + rolled back) one database served over an idle window, from pg_stat_database.
 * A short settle first lets counters from earlier work be flushed (backends flush them within ~1 s of idling).
 */
export async function idleTransactions(dbName: string, windowMs: number, settleMs = 2000): Promise<IdleLoad> {
  await sleep(settleMs)
  const admin = connect(ADMIN_URL)
  try {
    const before = await transactionCount(admin, dbName)
    const t0 = performance.now()
    await sleep(windowMs)
    const after = await transactionCount(admin, dbName)
    const seconds = (performance.now() - t0) / 1000
    return { windowSeconds: round(seconds, 2), transactions: after - before, perSecond: round((after - before) / seconds, 2) }
  } finally {
    await admin.end()
  }
}
