import { ADMIN_URL, connect, sleep, transactionCount, vacuumDatabase } from './db'
import { round } from './stats'

export interface IdleLoad {
  windowSeconds: number
  transactions: number
  perSecond: number
}

/**
 * Transactions (committed + rolled back) one database served over an idle window, from pg_stat_database.
 * First a VACUUM ANALYZE of that database, so autovacuum (whose transactions count there too) has nothing
 * left to do after the busy runs, then a settle so every backend has flushed its earlier counters (see
 * BenchConfig.idleSettleMs). What remains is the idle system's own polling, plus at most one
 * autovacuum visit per autovacuum_naptime.
 */
export async function idleTransactions(dbName: string, windowMs: number, settleMs: number): Promise<IdleLoad> {
  await vacuumDatabase(dbName)
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
