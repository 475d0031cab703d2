import { runMigrations } from '../src/server/db/migrate'
import type { BenchConfig } from './config'
import { connect, recreateDatabase } from './db'
import { progressLine } from './progress'
import { round } from './stats'

export const RAW_DB = 'bench_raw'
const SCRIPT = new URL('./raw/claim_finish.sql', import.meta.url).pathname
const BATCH = 250
const CLIENTS = 2

export interface RawResult {
  rows: number
  seconds: number
  rowsPerSec: number
  clients: number
  batch: number
}

/**
 * The raw ceiling: worker_jobs with exactly our DDL (our migrations, minus the NOTIFY trigger, which only
 * fires on insert anyway), N due rows, and pgbench with two connections looping claim + finish batches of
 * 250 until the table is drained. Each client runs N / 250 / 2 transactions, so every claim is full.
 */
export async function measureRaw(cfg: BenchConfig, label = 'raw'): Promise<RawResult> {
  const url = await recreateDatabase(RAW_DB)
  await runMigrations(url)
  const sql = connect(url)
  const line = progressLine()
  const rows = Math.ceil(cfg.jobs / (BATCH * CLIENTS)) * BATCH * CLIENTS
  try {
    await sql`DROP TRIGGER IF EXISTS worker_jobs_notify_insert ON worker_jobs`
    line.update(`${label}: inserting ${rows.toLocaleString()} rows`)
    await sql`INSERT INTO worker_jobs (type, user_id, due) SELECT 'noop', 0, now() FROM generate_series(1, ${rows})`
    await sql`VACUUM ANALYZE worker_jobs`
    line.update(`${label}: pgbench, ${CLIENTS} clients, batches of ${BATCH}`)
    const u = new URL(url)
    const t0 = performance.now()
    const proc = Bun.spawn(
      ['pgbench', '-n', '-h', u.hostname, '-p', u.port || '5432', '-U', u.username || 'postgres', '-c', String(CLIENTS), '-j', String(CLIENTS),
        '-t', String(rows / (BATCH * CLIENTS)), '-f', SCRIPT, RAW_DB],
      { stdout: 'pipe', stderr: 'pipe' },
    )
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited])
    const seconds = (performance.now() - t0) / 1000
    if (code !== 0) throw new Error(`pgbench failed (${code}): ${err}\n${out}`)
    const [check] = await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE finished IS NOT NULL AND success AND remove_at IS NOT NULL`
    if (check?.n !== rows) throw new Error(`pgbench finished ${check?.n} of ${rows} rows`)
    // pgbench's own rate excludes its connection setup; fall back to the wall clock.
    const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(out)
    const rowsPerSec = tps ? Number(tps[1]) * BATCH : rows / seconds
    const res = { rows, seconds: round(rows / rowsPerSec, 3), rowsPerSec: round(rowsPerSec), clients: CLIENTS, batch: BATCH }
    line.done(`${label}: ${res.rowsPerSec.toLocaleString()} rows/s (${rows.toLocaleString()} rows in ${res.seconds} s)`)
    return res
  } finally {
    await sql.end()
  }
}
