import { makeWorkerUtils } from 'graphile-worker'
import type { BenchConfig } from '../config'
import { connect } from '../db'
import type { ProbeData } from '../probe'
import { spawnProcess } from '../proc'
import { type ShapeTarget, ioBound, OURS_SLOTS, probeLateness, WAIT_MS } from '../shapes'
import { type GraphileConfig, quietLogger, startGraphile } from './graphile'
import { client, PGBOSS_ENTRY, type PgBossConfig } from './pgboss'

/**
 * The I/O-bound and priority shapes for graphile-worker and pg-boss, each at the same total concurrency as
 * ours (OURS_SLOTS jobs running at once) and otherwise at its best configuration for throughput:
 * - graphile-worker: one process running OURS_SLOTS jobs at once, a local queue as deep, completions not
 *   delayed. Its priority is ours (lower runs first); the probe is its own task in the same job table.
 * - pg-boss: batches of 100 worked by 5 local workers (each batch's jobs run at once), fetching again at
 *   once while batches come back full. Its priority is the other way round (higher runs first), and it
 *   orders by it within a queue only, so the probe is a job of the backlog's own queue.
 */
export const GRAPHILE_SHAPES: GraphileConfig = { concurrency: OURS_SLOTS, localQueueSize: OURS_SLOTS, completeJobBatchDelay: 0 }
export const PGBOSS_SHAPES: PgBossConfig = { queue: 'wait', work: { batchSize: 100, localConcurrency: OURS_SLOTS / 100, burstWhenBatchFull: true } }

export interface PeerShapes {
  ioBound: Awaited<ReturnType<typeof ioBound>>
  priority: Awaited<ReturnType<typeof probeLateness>>
}

export async function graphileShapes(cfg: BenchConfig, url: string, jobs: number): Promise<PeerShapes> {
  return withGraphileShapes(url, async (target) => ({
    ioBound: await ioBound(cfg, target, jobs),
    priority: await probeLateness(target, jobs, 'graphile-worker: priority -1 probes under the backlog'),
  }))
}

/** The I/O-bound shape alone (bench/ioOnly.ts). */
export function graphileIoBound(cfg: BenchConfig, url: string, jobs: number): Promise<PeerShapes['ioBound']> {
  return withGraphileShapes(url, (target) => ioBound(cfg, target, jobs))
}

async function withGraphileShapes<T>(url: string, measure: (target: ShapeTarget) => Promise<T>): Promise<T> {
  const sql = connect(url, 2)
  const worker = await startGraphile(url, GRAPHILE_SHAPES)
  const utils = await makeWorkerUtils({ connectionString: url, logger: quietLogger() })
  const waits = sql`
    graphile_worker._private_jobs AS j JOIN graphile_worker._private_tasks AS t ON t.id = j.task_id WHERE t.identifier = 'wait'`
  const target: ShapeTarget = {
    name: 'graphile-worker',
    pids: [worker.proc.pid],
    insertBacklog: async (n) => {
      await sql`
        SELECT count(*) FROM graphile_worker.add_jobs(array(
          SELECT json_populate_record(null::graphile_worker.job_spec, json_build_object('identifier', 'wait', 'payload', json_build_object('ms', ${WAIT_MS}::int)))
          FROM generate_series(1, ${n})))`
    },
    // graphile-worker deletes a job when it completes.
    drained: async () => (await sql`SELECT 1 FROM ${waits} LIMIT 1`).length === 0,
    remaining: async () => Number((await sql`SELECT count(*)::int AS n FROM ${waits}`)[0]?.n),
    submitProbe: (data: ProbeData) => utils.addJob('latencyProbe', data, { priority: -1 }).then(() => {}),
  }
  try {
    return await measure(target)
  } finally {
    await utils.release()
    await worker.stop()
    await sql`DELETE FROM graphile_worker._private_jobs`
    await sql.end()
  }
}

export async function pgbossShapes(cfg: BenchConfig, url: string, jobs: number): Promise<PeerShapes> {
  const sql = connect(url, 2)
  const boss = await client(url)
  const worker = spawnProcess([process.execPath, PGBOSS_ENTRY, JSON.stringify({ connectionString: url, ...PGBOSS_SHAPES })], {}, (m) => m.type === 'ready')
  await worker.ready
  const unfinishedWaits = sql`name = 'wait' AND state IN ('created', 'retry', 'active') AND NOT (data ? 'port')`
  const target: ShapeTarget = {
    name: 'pg-boss',
    pids: [worker.proc.pid],
    insertBacklog: async (n) => {
      await boss.insert('wait', Array.from({ length: n }, () => ({ data: { ms: WAIT_MS } })))
    },
    drained: async () => (await sql`SELECT 1 FROM pgboss.job WHERE ${unfinishedWaits} LIMIT 1`).length === 0,
    remaining: async () => Number((await sql`SELECT count(*)::int AS n FROM pgboss.job WHERE ${unfinishedWaits}`)[0]?.n),
    submitProbe: (data: ProbeData) => boss.send('wait', data, { priority: 1 }).then(() => {}),
  }
  try {
    return { ioBound: await ioBound(cfg, target, jobs), priority: await probeLateness(target, jobs, 'pg-boss: priority probes under the backlog') }
  } finally {
    await worker.stop()
    await boss.deleteAllJobs('wait')
    await boss.stop()
    await sql.end()
  }
}
