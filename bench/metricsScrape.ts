import { runMigrations } from '../src/server/db/migrate'
import { connect } from './db'
import { spawnProcess } from './proc'
import { percentile, round } from './stats'

const ENTRY = new URL('./oursServer.ts', import.meta.url).pathname

/** Waiting and running rows beside the finished ones, so a scrape has a live queue to count. */
const QUEUE = { pendingDue: 100, pendingFuture: 100, running: 10 }

export interface ScrapeTimes {
  p50Ms: number
  p99Ms: number
  maxMs: number
}

/**
 * How long GET /metrics takes with `finishedRows` finished rows in worker_jobs (the bound: under
 * 20 ms at 1,000,000). It EMPTIES worker_jobs of `databaseUrl` (migrating it first if needed), inserts the
 * finished rows in one INSERT … SELECT generate_series, plus a small live queue (QUEUE: due, later and
 * running rows, which a scrape does read), runs VACUUM ANALYZE, then starts our server (the real boot,
 * in its own process, WORKER_COUNT=0 so nothing claims the queue) and times `samples` scrapes, one at a
 * time, after two warm-up scrapes. Times are wall clock from request to last byte, in this process.
 */
export async function measureScrape(opts: { databaseUrl: string; finishedRows: number; samples: number }): Promise<ScrapeTimes> {
  await runMigrations(opts.databaseUrl)
  const sql = connect(opts.databaseUrl)
  try {
    await sql`TRUNCATE worker_jobs`
    await sql`INSERT INTO worker_jobs (type, user_id, started, finished, success, result, remove_at)
      SELECT CASE g % 3 WHEN 0 THEN 'noop' WHEN 1 THEN 'removeOldWorkerJobs' ELSE 'watchChain' END, g % 1000,
        now() - interval '1 hour', now() - interval '1 hour' + make_interval(secs => g % 3600), g % 10 <> 0, '{}'::jsonb,
        now() + interval '7 days'
      FROM generate_series(1, ${opts.finishedRows}) AS g`
    await sql`INSERT INTO worker_jobs (type, due) SELECT 'noop', now() - interval '1 minute' FROM generate_series(1, ${QUEUE.pendingDue})`
    await sql`INSERT INTO worker_jobs (type, due) SELECT 'noop', now() + interval '1 hour' FROM generate_series(1, ${QUEUE.pendingFuture})`
    await sql`INSERT INTO worker_jobs (type, started, locked_by, lease_expires_at)
      SELECT 'noop', now(), 'bench/elsewhere', now() + interval '1 hour' FROM generate_series(1, ${QUEUE.running})`
    await sql`VACUUM ANALYZE worker_jobs`
  } finally {
    await sql.end()
  }

  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(WORKER_|CRON_|LOG_)/.test(k))) as Record<string, string>
  const spawned = spawnProcess(
    [process.execPath, ENTRY],
    {
      ...env,
      NODE_ENV: 'production',
      DATABASE_URL: opts.databaseUrl,
      CHAIN_RPC_URL: 'http://127.0.0.1:8545',
      BASE_URL: 'http://127.0.0.1',
      SESSION_SECRET: 'benchmark-session-secret-not-for-use-0123456789',
      HOST: '127.0.0.1',
      PORT: '0',
      WORKER_COUNT: '0',
      CRON_WATCH_CHAIN: 'off',
      CRON_REMOVE_OLD_WORKER_JOBS: 'off',
      DEPLOY_MULTICALL3_ON_BOOT: 'false',
    },
    (m) => m.type === 'ready',
  )
  try {
    const { url } = (await spawned.ready) as { url: string }
    const scrape = async () => {
      const t = performance.now()
      const res = await fetch(`${url}/metrics`)
      const text = await res.text()
      if (res.status !== 200 || !text.includes('worker_queue_jobs{state="running"} 10')) throw new Error(`unexpected /metrics answer (${res.status})`)
      return performance.now() - t
    }
    await scrape()
    await scrape()
    const times: number[] = []
    for (let i = 0; i < opts.samples; i++) times.push(await scrape())
    return { p50Ms: round(percentile(times, 50), 2), p99Ms: round(percentile(times, 99), 2), maxMs: round(Math.max(...times), 2) }
  } finally {
    await spawned.stop()
  }
}
