import { Logger as GraphileLogger, makeWorkerUtils, runMigrations } from 'graphile-worker'
import type { BenchConfig } from '../config'
import { connect, recreateDatabase, vacuumDatabase } from '../db'
import { type LatencyResult, measureLatency } from '../latency'
import { step } from '../progress'
import { idleTransactions, type IdleLoad } from '../idle'
import { rssMb, spawnProcess } from '../proc'
import { round } from '../stats'
import { measureThroughput, type ThroughputResult } from '../throughput'
import type { GraphileOptions } from './graphileWorker'

export const GRAPHILE_DB = 'bench_graphile'
const ENTRY = new URL('./graphileWorker.ts', import.meta.url).pathname

export type GraphileConfig = Omit<GraphileOptions, 'connectionString'>
/** graphile-worker's defaults: concurrency 1, no local queue, no completion batching. */
export const GRAPHILE_DEFAULT: GraphileConfig = {}
/** The tuned configuration from its performance docs. */
export const GRAPHILE_BEST: GraphileConfig = { concurrency: 10, localQueueSize: 500, completeJobBatchDelay: 0 }

export async function prepareGraphileDb(): Promise<string> {
  const url = await recreateDatabase(GRAPHILE_DB)
  await runMigrations({ connectionString: url, logger: quietLogger() })
  return url
}

export async function startGraphile(url: string, config: GraphileConfig) {
  const spawned = spawnProcess([process.execPath, ENTRY, JSON.stringify({ connectionString: url, ...config })], {}, (m) => m.type === 'ready')
  await spawned.ready
  return spawned
}

export async function graphileThroughput(cfg: BenchConfig, url: string, config: GraphileConfig, label: string, capMs = cfg.throughputCapMs): Promise<ThroughputResult> {
  const sql = connect(url)
  const worker = await startGraphile(url, config)
  try {
    return await measureThroughput({
      label,
      jobs: cfg.jobs,
      capMs,
      pollMs: cfg.pollMs,
      pids: [worker.proc.pid],
      // One statement through its own bulk function, as ours gets one INSERT.
      insert: async () => {
        await sql`
          SELECT count(*) FROM graphile_worker.add_jobs(array(
            SELECT json_populate_record(null::graphile_worker.job_spec, '{"identifier":"noop","payload":{}}'::json)
            FROM generate_series(1, ${cfg.jobs})))`
      },
      // graphile-worker deletes a job when it completes. The primary key finds a live row without a scan.
      allFinished: async () => (await sql`SELECT id FROM graphile_worker._private_jobs ORDER BY id LIMIT 1`).length === 0,
      remaining: async () => Number((await sql`SELECT count(*) AS n FROM graphile_worker._private_jobs`)[0]?.n),
    })
  } finally {
    await worker.stop()
    await sql`DELETE FROM graphile_worker._private_jobs`
    await sql.end()
  }
}

/** Pickup latency; with `idle`, afterwards also the idle worker's database load and RSS. */
export async function graphileLatency(
  cfg: BenchConfig,
  url: string,
  config: GraphileConfig,
  label: string,
  idle?: { windowMs: number; settleMs: number },
): Promise<{ latency: LatencyResult; idle?: IdleLoad; idleRssMb?: number }> {
  await vacuumDatabase(GRAPHILE_DB)
  const worker = await startGraphile(url, config)
  const utils = await makeWorkerUtils({ connectionString: url, logger: quietLogger() })
  let released = false
  const release = async () => {
    if (!released) await utils.release()
    released = true
  }
  try {
    const latency = await measureLatency(label, cfg, (data) => utils.addJob('latencyProbe', data).then(() => {}))
    await release()
    if (!idle) return { latency }
    step(`  graphile-worker: settling ${idle.settleMs / 1000} s, then watching the idle worker for ${idle.windowMs / 1000} s`)
    const load = await idleTransactions(GRAPHILE_DB, idle.windowMs, idle.settleMs)
    step(`  graphile-worker: idle ${load.perSecond} transactions/s`)
    return { latency, idle: load, idleRssMb: round(rssMb(worker.proc.pid) ?? Number.NaN, 1) }
  } finally {
    await release().catch(() => {})
    await worker.stop()
  }
}

/** addJobs from the bench process (no worker running), in the same chunks as ours. */
export async function graphileBulkSubmit(cfg: BenchConfig, url: string): Promise<{ jobs: number; seconds: number; jobsPerSec: number }> {
  const utils = await makeWorkerUtils({ connectionString: url, logger: quietLogger() })
  const chunk = Array.from({ length: cfg.bulkChunk }, () => ({ identifier: 'noop', payload: {} }))
  try {
    await utils.addJobs(chunk.slice(0, 100))
    const t0 = performance.now()
    for (let done = 0; done < cfg.bulkJobs; done += cfg.bulkChunk) {
      await utils.addJobs(chunk.slice(0, Math.min(cfg.bulkChunk, cfg.bulkJobs - done)))
    }
    const seconds = (performance.now() - t0) / 1000
    step(`  graphile-worker: addJobs ${cfg.bulkJobs.toLocaleString()} jobs in ${seconds.toFixed(2)} s`)
    return { jobs: cfg.bulkJobs, seconds: round(seconds, 3), jobsPerSec: round(cfg.bulkJobs / seconds) }
  } finally {
    await utils.withPgClient((c) => c.query('DELETE FROM graphile_worker._private_jobs'))
    await utils.release()
  }
}

export function quietLogger() {
  // Its Logger class with a log factory that drops everything: the bench process prints only progress.
  return new GraphileLogger(() => () => {})
}
