import type postgres from 'postgres'
import { z } from 'zod'
import { loadConfig } from '../../src/server/config'
import { createLogger } from '../../src/server/log'
import { createServerApp, type ServerApp } from '../../src/server/serverApp'
import { buildRegistry, loadJobModules } from '../../src/server/workers/jobs/registry'
import { defineJob, type Job } from '../../src/server/workers/jobs/types'
import { QueueDb } from '../../src/server/workers/queueDb'
import { WorkerLoop } from '../../src/server/workers/workerLoop'
import { TEST_JOB_MODULE } from './engine'
import { TEST_ENV } from './server'
import { recordedRun } from '../fixtures/testJobs'

/**
 * An in-process worker loop over a ServerApp with extra job types: for tests of the claim loop's choices
 * (which jobs it takes, and when), with a real Postgres and no child processes.
 */

/** A ServerApp (no manager, no children) with the test job types plus `extra`. */
export async function appWith(url: string, extra: Job[] = [], opts: { withTestJobs?: boolean } = {}): Promise<ServerApp> {
  const config = loadConfig({ ...TEST_ENV, LOG_LEVEL: 'warn', WORKER_LOG_LEVEL: 'warn', DATABASE_URL: url })
  const base = opts.withTestJobs === false ? [] : await loadJobModules([TEST_JOB_MODULE])
  return createServerApp({ config, log: createLogger({ level: 'warn' }), registry: buildRegistry([...base, ...extra]) })
}

export function loopOf(app: ServerApp, url: string, o: { concurrency?: number; urgentSlots?: number; pollIntervalMs?: number; leaseMs?: number } = {}) {
  const queue = new QueueDb(url, { max: 2 }, 10_000)
  const workerId = `loop/${Math.random().toString(36).slice(2, 8)}`
  const loop = new WorkerLoop(app, app.log, {
    notifyAnswerDelayMs: 0,
    urgentSlots: o.urgentSlots ?? 0,
    workerId,
    concurrency: o.concurrency ?? 4,
    pollIntervalMs: o.pollIntervalMs ?? 60_000,
    leaseMs: o.leaseMs ?? 10_000,
    defaultTimeoutMs: 60_000,
    queueDb: queue,
  })
  return {
    loop,
    queue,
    workerId,
    async stop() {
      await loop.drain()
      await queue.close()
    },
  }
}

/** A recorded-run type with the given limits. */
export function limitedType(type: string, limits: Partial<Job>): Job {
  return defineJob({
    type,
    dataSchema: z.object({ key: z.string().default('k'), holdMs: z.number().int().min(0).default(0) }),
    ...limits,
    async run({ serverApp, job, signal }) {
      await recordedRun(serverApp, job, job.data.holdMs, signal)
      return {}
    },
  } as Job)
}

export async function runsOf(sql: postgres.Sql, ids: number[]) {
  return sql<{ job_id: string; started_at: Date; ended_at: Date }[]>`SELECT job_id, started_at, ended_at FROM test_job_runs WHERE job_id = ANY(${ids}) ORDER BY started_at`
}
