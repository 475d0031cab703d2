import { PgBoss } from 'pg-boss'
import type { BenchConfig } from '../config'
import { connect, recreateDatabase } from '../db'
import { step } from '../progress'
import { spawnProcess } from '../proc'
import { round } from '../stats'
import { measureThroughput, type ThroughputResult } from '../throughput'
import type { PgBossOptions } from './pgbossWorker'

export const PGBOSS_DB = 'bench_pgboss'
export const PGBOSS_ENTRY = new URL('./pgbossWorker.ts', import.meta.url).pathname

export type PgBossConfig = Omit<PgBossOptions, 'connectionString'>
/** pg-boss's defaults: one job per fetch, one worker, a 2 s poll between fetches. */
export const PGBOSS_DEFAULT: PgBossConfig = {}
/** The tuned configuration: 100-job batches, fetching again at once while batches come back full, 4 workers. */
export const PGBOSS_BEST: PgBossConfig = { work: { batchSize: 100, burstWhenBatchFull: true, localConcurrency: 4 } }

/** A pg-boss client for the bench process: it only inserts, so no maintenance or scheduling of its own. */
export async function client(url: string): Promise<PgBoss> {
  const boss = new PgBoss({ connectionString: url, supervise: false, schedule: false, migrate: false })
  boss.on('error', (err) => step(`  pg-boss client error: ${err.message}`))
  await boss.start()
  return boss
}

export async function preparePgBossDb(): Promise<string> {
  const url = await recreateDatabase(PGBOSS_DB)
  const boss = new PgBoss({ connectionString: url, supervise: false, schedule: false })
  await boss.start()
  await boss.createQueue('noop')
  await boss.createQueue('wait')
  await boss.stop()
  return url
}

export async function pgbossThroughput(cfg: BenchConfig, url: string, config: PgBossConfig, label: string, capMs = cfg.throughputCapMs): Promise<ThroughputResult> {
  const sql = connect(url)
  const boss = await client(url)
  const worker = spawnProcess([process.execPath, PGBOSS_ENTRY, JSON.stringify({ connectionString: url, ...config })], {}, (m) => m.type === 'ready')
  await worker.ready
  try {
    const jobs = Array.from({ length: cfg.jobs }, () => ({ data: {} }))
    return await measureThroughput({
      label,
      jobs: cfg.jobs,
      capMs,
      pollMs: cfg.pollMs,
      pids: [worker.proc.pid],
      // One insert call (one statement) through its own bulk API.
      insert: async () => {
        await boss.insert('noop', jobs)
      },
      allFinished: async () =>
        (await sql`SELECT 1 FROM pgboss.job WHERE name = 'noop' AND state IN ('created', 'retry', 'active') LIMIT 1`).length === 0,
      remaining: async () =>
        Number((await sql`SELECT count(*) AS n FROM pgboss.job WHERE name = 'noop' AND state IN ('created', 'retry', 'active')`)[0]?.n),
    })
  } finally {
    await worker.stop()
    await boss.deleteAllJobs('noop')
    await boss.stop()
    await sql.end()
  }
}

/** insert from the bench process (no worker running), in the same chunks as ours. */
export async function pgbossBulkSubmit(cfg: BenchConfig, url: string): Promise<{ jobs: number; seconds: number; jobsPerSec: number }> {
  const boss = await client(url)
  const chunk = Array.from({ length: cfg.bulkChunk }, () => ({ data: {} }))
  try {
    await boss.insert('noop', chunk.slice(0, 100))
    const t0 = performance.now()
    for (let done = 0; done < cfg.bulkJobs; done += cfg.bulkChunk) {
      await boss.insert('noop', chunk.slice(0, Math.min(cfg.bulkChunk, cfg.bulkJobs - done)))
    }
    const seconds = (performance.now() - t0) / 1000
    step(`  pg-boss: insert ${cfg.bulkJobs.toLocaleString()} jobs in ${seconds.toFixed(2)} s`)
    return { jobs: cfg.bulkJobs, seconds: round(seconds, 3), jobsPerSec: round(cfg.bulkJobs / seconds) }
  } finally {
    await boss.deleteAllJobs('noop')
    await boss.stop()
  }
}
