import type postgres from 'postgres'
import { type Config, ConfigError } from '../config'

/** Each child's queue pool: claim, finish and heartbeat may overlap. Never lent to handler code. */
export const QUEUE_POOL_SIZE = 3
/** Each child's `LISTEN worker_jobs` connection. */
export const LISTEN_CONNECTIONS = 1
/**
 * The main process's live-update hub (src/server/live/hub.ts): its `LISTEN notification_added`, on the main
 * client's own listen connection (postgres.js opens one beside the pool), held while the server runs.
 */
export const LIVE_LISTEN_CONNECTIONS = 1

type BudgetConfig = Pick<Config, 'DB_POOL_SIZE' | 'WORKER_COUNT' | 'WORKER_DB_POOL_SIZE'>

/** Connections one child holds: its queue pool, its handlers' pool and its LISTEN connection. */
export const connectionsPerWorker = (config: BudgetConfig): number => QUEUE_POOL_SIZE + config.WORKER_DB_POOL_SIZE + LISTEN_CONNECTIONS

/**
 * The most connections one server holds at once: the main pool, the live hub's LISTEN, plus every child's.
 * The boot's one migration connection is closed before the workers start, so it is not part of the sum.
 */
export function connectionBudget(config: BudgetConfig): number {
  return config.DB_POOL_SIZE + LIVE_LISTEN_CONNECTIONS + config.WORKER_COUNT * connectionsPerWorker(config)
}

export interface ConnectionRoom {
  /** connectionBudget(config) */
  needed: number
  /** maxConnections - reserved - inUse */
  free: number
  maxConnections: number
  /** superuser_reserved_connections + reserved_connections (PostgreSQL 16+) */
  reserved: number
  /** Client backends open now, other than the one asking. */
  inUse: number
}

/**
 * Refuses (ConfigError, one line) a server whose pools cannot all fit in what Postgres has left, instead
 * of letting its children fail one by one with "too many clients" later. Every client backend counts
 * as used, whoever opened it: several servers share one database, and their idle pooled connections hold
 * slots too. Slots reserved for superusers and for pg_use_reserved_connections are left to the operator,
 * even when this server connects as a superuser. A boot-time check only: it cannot stop another client
 * from taking the room afterwards.
 */
export async function checkConnectionBudget(sql: postgres.Sql, config: BudgetConfig): Promise<ConnectionRoom> {
  // reserved_connections exists from PostgreSQL 16 on; current_setting(…, true) is NULL before.
  const [row] = await sql<{ max: number; reserved: number; in_use: number }[]>`
    SELECT current_setting('max_connections')::int AS max,
           current_setting('superuser_reserved_connections')::int
             + coalesce(current_setting('reserved_connections', true)::int, 0) AS reserved,
           (SELECT count(*)::int FROM pg_stat_activity
             WHERE backend_type = ${'client backend'} AND pid <> pg_backend_pid()) AS in_use`
  const room = { needed: connectionBudget(config), maxConnections: row!.max, reserved: row!.reserved, inUse: row!.in_use }
  const free = Math.max(0, room.maxConnections - room.reserved - room.inUse)
  if (room.needed > free) {
    throw new ConfigError(
      `connection budget: this server needs ${room.needed} connections (DB_POOL_SIZE ${config.DB_POOL_SIZE} + ${LIVE_LISTEN_CONNECTIONS} live LISTEN + ${config.WORKER_COUNT} workers × ${connectionsPerWorker(config)}: ` +
        `${QUEUE_POOL_SIZE} queue + WORKER_DB_POOL_SIZE ${config.WORKER_DB_POOL_SIZE} + ${LISTEN_CONNECTIONS} LISTEN) but Postgres has ${free} free ` +
        `(max_connections ${room.maxConnections} - ${room.reserved} reserved - ${room.inUse} in use by other clients); ` +
        'lower WORKER_COUNT, DB_POOL_SIZE or WORKER_DB_POOL_SIZE, or raise max_connections',
    )
  }
  return { ...room, free }
}
