import { sql } from 'drizzle-orm'
import type { ServerApp } from '../serverApp'
import type { WorkerManager, WorkerStatus } from '../workers/manager'

export interface HealthReport {
  status: 'ok' | 'degraded'
  db: { ok: boolean; latencyMs: number; error?: string }
  workers: WorkerStatus[]
}

const DB_TIMEOUT_MS = 2000

/** 200 when the database answers and every configured child is alive and reports no problem; 503 otherwise. */
export async function checkHealth(serverApp: ServerApp, manager: WorkerManager | null): Promise<{ code: number; body: HealthReport }> {
  const t0 = performance.now()
  let db: HealthReport['db']
  try {
    await Promise.race([
      serverApp.db.execute(sql`SELECT 1`),
      new Promise((_, reject) => setTimeout(() => reject(new Error(`no answer within ${DB_TIMEOUT_MS} ms`)), DB_TIMEOUT_MS)),
    ])
    db = { ok: true, latencyMs: round(performance.now() - t0) }
  } catch (err) {
    db = { ok: false, latencyMs: round(performance.now() - t0), error: err instanceof Error ? err.message : String(err) }
  }
  let workers: WorkerStatus[] = []
  if (manager) {
    workers = db.ok ? await manager.status().catch(() => manager.statusWithoutCounts()) : manager.statusWithoutCounts()
  }
  const healthy = db.ok && (!manager || manager.healthyCount >= manager.configuredCount)
  return { code: healthy ? 200 : 503, body: { status: healthy ? 'ok' : 'degraded', db, workers } }
}

const round = (ms: number) => Math.round(ms * 100) / 100
