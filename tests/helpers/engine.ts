import postgres from 'postgres'
import { type RunningServer, startServer } from '../../src/server/boot'
import { loadConfig } from '../../src/server/config'
import { createLogger } from '../../src/server/log'
import { createServerApp, type ServerApp } from '../../src/server/serverApp'
import { buildRegistry, loadJobModules } from '../../src/server/workers/jobs/registry'
import { TEST_ENV } from './server'

export const TEST_JOB_MODULE = new URL('../fixtures/testJobs.ts', import.meta.url).pathname

const quietEnv = { ...TEST_ENV, LOG_LEVEL: 'warn', WORKER_LOG_LEVEL: 'warn' }

/** The real server in this process (HTTP on a free port, real child processes), with the test job types. */
export async function startTestServer(databaseUrl: string, env: Record<string, string> = {}, extraJobModules: string[] = []): Promise<RunningServer> {
  const config = loadConfig({ ...quietEnv, DATABASE_URL: databaseUrl, ...env })
  const server = await startServer(config, { jobModules: [TEST_JOB_MODULE, ...extraJobModules], log: createLogger({ level: config.LOG_LEVEL }) })
  await server.ready
  return server
}

/** A ServerApp without workers, for submitting and inspecting. */
export async function testServerApp(databaseUrl: string, env: Record<string, string> = {}): Promise<ServerApp> {
  const config = loadConfig({ ...quietEnv, DATABASE_URL: databaseUrl, ...env })
  const registry = buildRegistry(await loadJobModules([TEST_JOB_MODULE]))
  return createServerApp({ config, log: createLogger({ level: 'warn' }), registry })
}

/** A plain postgres.js client for assertions straight against the tables. */
export function sqlClient(databaseUrl: string) {
  return postgres(databaseUrl, { max: 2, onnotice: () => {} })
}

export const CREATE_RUNS_TABLE = `CREATE TABLE IF NOT EXISTS test_job_runs (
  job_id bigint NOT NULL, pid integer NOT NULL, started_at timestamptz NOT NULL, ended_at timestamptz NOT NULL)`

export const CREATE_ABORTS_TABLE = `CREATE TABLE IF NOT EXISTS test_job_aborts (
  job_id bigint NOT NULL, attempt integer NOT NULL, pid integer NOT NULL, reason text NOT NULL, at timestamptz NOT NULL DEFAULT now())`
