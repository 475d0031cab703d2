import { sql } from 'drizzle-orm'
import type { ServerApp } from '../serverApp'
import type { WorkerManager, WorkerStatus } from '../workers/manager'

/**
 * GET /health is public (load balancers, uptime checks), so it says how things are and nothing about
 * where or who: no host names, no pids, no worker ids (they embed both), no database error text (a
 * driver's message can name the host and the user), no user data. Details are for admins, through
 * GraphQL `workerStatus`.
 */
export interface HealthReport {
  status: 'ok' | 'degraded'
  db: { ok: boolean; latencyMs: number }
  workers: WorkerHealth[]
}

export interface WorkerHealth {
  /** The slot, 0..WORKER_COUNT-1: stable across restarts of its process. */
  index: number
  alive: boolean
  healthy: boolean
  /** Why an alive worker is not healthy; one of the fixed messages of the manager and the worker loop. */
  problem: string | null
  restarts: number
  runningJobs: number
}

const DB_TIMEOUT_MS = 2000

/** 200 when the database answers and every configured child is alive and reports no problem; 503 otherwise. */
export async function checkHealth(serverApp: ServerApp, manager: WorkerManager | null): Promise<{ code: number; body: HealthReport }> {
  const t0 = performance.now()
  let dbOk: boolean
  let timer: ReturnType<typeof setTimeout> | undefined
  try {
    await Promise.race([
      serverApp.db.execute(sql`SELECT 1`),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${DB_TIMEOUT_MS} ms`)), DB_TIMEOUT_MS)
      }),
    ])
    dbOk = true
  } catch (err) {
    // The reason goes to the log only.
    serverApp.log.warn({ err }, 'health: database check failed')
    dbOk = false
  } finally {
    clearTimeout(timer)
  }
  const db = { ok: dbOk, latencyMs: round(performance.now() - t0) }
  let workers: WorkerStatus[] = []
  if (manager) {
    workers = db.ok ? await manager.status().catch(() => manager.statusWithoutCounts()) : manager.statusWithoutCounts()
  }
  const healthy = db.ok && (!manager || manager.healthyCount >= manager.configuredCount)
  return { code: healthy ? 200 : 503, body: { status: healthy ? 'ok' : 'degraded', db, workers: workers.map(publicWorker) } }
}

/** Only the listed fields: a field added to WorkerStatus later (a host, an error) does not leak by default. */
function publicWorker(w: WorkerStatus, index: number): WorkerHealth {
  return { index, alive: w.alive, healthy: w.healthy, problem: w.problem, restarts: w.restarts, runningJobs: w.runningJobs }
}

const round = (ms: number) => Math.round(ms * 100) / 100
