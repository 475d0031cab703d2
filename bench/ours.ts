import { readFileSync } from 'node:fs'
import { runMigrations } from '../src/server/db/migrate'
import { createDb } from '../src/server/db/client'
import { createSubmitter } from '../src/server/serverApp'
import { buildRegistry } from '../src/server/workers/jobs/registry'
import { jobs as benchJobs } from './benchJobs'
import type { BenchConfig } from './config'
import { connect, recreateDatabase, sleep, vacuumDatabase } from './db'
import { idleTransactions, type IdleLoad } from './idle'
import { measureLatency, type LatencyResult } from './latency'
import { step } from './progress'
import { rssMb, type Spawned, spawnProcess } from './proc'
import { round } from './stats'
import { measureThroughput, type ThroughputResult } from './throughput'

export const OURS_DB = 'bench_ours'
const ENTRY = new URL('./oursServer.ts', import.meta.url).pathname
const WORKER_COUNT = 2

export interface OursServer {
  spawned: Spawned
  /** The worker children (from GET /health). */
  pids: number[]
  stop(): Promise<void>
}

/** A fresh database with our migrations applied. */
export async function prepareOursDb(): Promise<string> {
  const url = await recreateDatabase(OURS_DB)
  await runMigrations(url)
  return url
}

/**
 * Starts our server (default configuration, WORKER_COUNT=2) in its own process and waits until both
 * children are listening for new jobs. Inherited WORKER_* / CRON_* / LOG_* variables are dropped so nothing
 * but the defaults applies; `extraEnv` (not used by the benchmark itself) is for trying other settings.
 */
export async function startOurs(url: string, extraEnv: Record<string, string> = {}): Promise<OursServer> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(WORKER_|CRON_|LOG_)/.test(k))) as Record<string, string>
  const children = Number(extraEnv.WORKER_COUNT ?? WORKER_COUNT)
  const spawned = spawnProcess([process.execPath, ENTRY], {
    ...env,
    NODE_ENV: 'production',
    DATABASE_URL: url,
    // Required in production; chain jobs are off here, so nothing has to listen on it.
    CHAIN_RPC_URL: 'http://127.0.0.1:8545',
    // Also required in production; the benchmark never signs in.
    BASE_URL: 'http://127.0.0.1',
    SESSION_SECRET: 'benchmark-session-secret-not-for-use-0123456789',
    HOST: '127.0.0.1',
    PORT: '0',
    WORKER_COUNT: String(WORKER_COUNT),
    CRON_WATCH_CHAIN: 'off',
    CRON_REMOVE_OLD_WORKER_JOBS: 'off',
    DEPLOY_MULTICALL3_ON_BOOT: 'false',
    ...extraEnv,
  }, (m) => m.type === 'ready')
  await spawned.ready
  // Children connect after the manager reports; wait until each has its LISTEN connection open.
  const sql = connect(url)
  try {
    for (let i = 0; ; i++) {
      const [row] = await sql`
        SELECT count(DISTINCT application_name)::int AS n FROM pg_stat_activity
        WHERE datname = ${OURS_DB} AND application_name LIKE 'worker %'`
      if ((row?.n ?? 0) >= children) break
      if (i > 300) throw new Error('our worker children did not connect within 15 s')
      await sleep(50)
    }
  } finally {
    await sql.end()
  }
  await sleep(300)
  // The child pids, from the OS (/health no longer shows pids: it is public). The server's direct
  // children are its workers; the benchmark runs no development services beside them.
  const pid = spawned.proc.pid
  const pids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
  if (pids.length !== children) throw new Error(`expected ${children} worker children of ${pid}, found ${pids.length}`)
  return { spawned, pids, stop: () => spawned.stop() }
}

/** Empties worker_jobs and optionally fills it with `finished` rows already done, as a long-running system would have. */
export async function resetOursTable(url: string, finishedRows = 0): Promise<void> {
  const sql = connect(url)
  try {
    await sql`TRUNCATE worker_jobs RESTART IDENTITY`
    if (finishedRows > 0) {
      // Same shape as a real finished row; chunks keep each statement's memory modest.
      for (let done = 0; done < finishedRows; done += 250_000) {
        const n = Math.min(250_000, finishedRows - done)
        await sql`
          INSERT INTO worker_jobs (type, user_id, due, started, finished, success, result, remove_at, locked_by, created_at, updated_at)
          SELECT 'noop', 0, t, t, t + interval '1 ms', true, '{"ok":true}'::jsonb, t + interval '7 days', 'preloaded', t, t
          FROM (SELECT now() - interval '1 day' + g * interval '1 ms' AS t FROM generate_series(1, ${n}) g) s`
      }
    }
    await sql`VACUUM ANALYZE worker_jobs`
  } finally {
    await sql.end()
  }
}

/** Between repeated runs: removes the rows a run left (the preloaded finished rows stay) and vacuums. */
export async function clearRunRows(url: string): Promise<void> {
  const sql = connect(url)
  try {
    await sql`DELETE FROM worker_jobs WHERE locked_by IS DISTINCT FROM 'preloaded'`
    await sql`VACUUM ANALYZE worker_jobs`
  } finally {
    await sql.end()
  }
}

/** Throughput of the running server: N noop jobs inserted in one statement (one NOTIFY), until all finished. */
export async function oursThroughput(cfg: BenchConfig, url: string, server: OursServer, label: string): Promise<ThroughputResult & { verified: boolean }> {
  const sql = connect(url)
  try {
    const res = await measureThroughput({
      label,
      jobs: cfg.jobs,
      capMs: cfg.throughputCapMs,
      pollMs: cfg.pollMs,
      pids: [server.spawned.proc.pid, ...server.pids],
      rssPids: server.pids,
      insert: async () => {
        await sql`INSERT INTO worker_jobs (type, user_id, due) SELECT 'noop', 0, now() FROM generate_series(1, ${cfg.jobs})`
      },
      // Both checks walk the partial indexes (claim and running lease), never the finished rows.
      allFinished: async () => {
        const [row] = await sql`
          SELECT NOT EXISTS (SELECT 1 FROM worker_jobs WHERE started IS NULL AND finished IS NULL)
             AND NOT EXISTS (SELECT 1 FROM worker_jobs WHERE started IS NOT NULL AND finished IS NULL) AS done`
        return row?.done === true
      },
      remaining: async () => {
        const [row] = await sql`
          SELECT (SELECT count(*) FROM worker_jobs WHERE started IS NULL AND finished IS NULL)
               + (SELECT count(*) FROM worker_jobs WHERE started IS NOT NULL AND finished IS NULL) AS n`
        return Number(row?.n)
      },
    })
    const [check] = await sql`
      SELECT count(*)::int AS n FROM worker_jobs
      WHERE type = 'noop' AND locked_by IS DISTINCT FROM 'preloaded' AND success = true AND started IS NOT NULL
        AND finished IS NOT NULL AND remove_at IS NOT NULL AND result = '{"ok":true}'::jsonb`
    const verified = !res.capped && check?.n === cfg.jobs
    if (!verified) step(`  WARNING: only ${check?.n} of ${cfg.jobs} rows have started, finished, success, result and remove_at set`)
    return { ...res, verified }
  } finally {
    await sql.end()
  }
}

export async function oursLatency(cfg: BenchConfig, url: string): Promise<LatencyResult> {
  await vacuumDatabase(OURS_DB)
  const handle = createDb(url, { max: 1, applicationName: 'bench submitter' })
  const submitter = createSubmitter(handle.db, buildRegistry(benchJobs))
  try {
    return await measureLatency('ours: pickup latency', cfg, (data) =>
      submitter.submitJob({ type: 'latencyProbe', data }).then(() => {}),
    )
  } finally {
    await handle.close()
  }
}

/** submitJobs from the bench process (no workers running), in chunks, until bulkJobs rows are inserted. */
export async function oursBulkSubmit(cfg: BenchConfig, url: string): Promise<{ jobs: number; seconds: number; jobsPerSec: number }> {
  const handle = createDb(url, { max: 1, applicationName: 'bench submitter' })
  const submitter = createSubmitter(handle.db, buildRegistry(benchJobs))
  const chunk = Array.from({ length: cfg.bulkChunk }, () => ({ type: 'noop', data: {} }))
  try {
    await submitter.submitJobs(chunk.slice(0, 100)) // warm-up: connection, prepared paths
    const t0 = performance.now()
    for (let done = 0; done < cfg.bulkJobs; done += cfg.bulkChunk) {
      await submitter.submitJobs(chunk.slice(0, Math.min(cfg.bulkChunk, cfg.bulkJobs - done)))
      step(`  ours: submitJobs ${Math.min(done + cfg.bulkChunk, cfg.bulkJobs).toLocaleString()}/${cfg.bulkJobs.toLocaleString()}`)
    }
    const seconds = (performance.now() - t0) / 1000
    return { jobs: cfg.bulkJobs, seconds: round(seconds, 3), jobsPerSec: round(cfg.bulkJobs / seconds) }
  } finally {
    await handle.close()
  }
}

export interface IdleCost extends IdleLoad {
  perSecondPerChild: number
  idleRssMb: Record<string, number>
}

/** With the server idle: the database's transaction rate over the idle window, and each child's RSS. */
export async function oursIdleCost(cfg: BenchConfig, server: OursServer): Promise<IdleCost> {
  step(`  ours: settling ${cfg.idleSettleMs / 1000} s, then watching the idle server for ${cfg.idleWindowMs / 1000} s`)
  const load = await idleTransactions(OURS_DB, cfg.idleWindowMs, cfg.idleSettleMs)
  const idleRssMb: Record<string, number> = {}
  for (const pid of server.pids) idleRssMb[pid] = round(rssMb(pid) ?? Number.NaN, 1)
  step(`  ours: idle ${load.perSecond} transactions/s for ${server.pids.length} children`)
  return { ...load, perSecondPerChild: round(load.perSecond / server.pids.length, 2), idleRssMb }
}
