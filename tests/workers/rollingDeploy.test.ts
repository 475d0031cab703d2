import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type postgres from 'postgres'
import { type RunningServer, startServer } from '../../src/server/boot'
import { loadConfig } from '../../src/server/config'
import { createLogger } from '../../src/server/log'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { sqlClient, startTestServer, TEST_JOB_MODULE } from '../helpers/engine'
import { TEST_ENV } from '../helpers/server'
import { waitFor } from '../helpers/wait'

/**
 * Rolling deploys: the claim used to take any type, so an old server claimed a type only the newer one
 * knew and failed it for good ("unknown job type"). Now a server claims only the types it registers.
 */
const NEWER_MODULE = new URL('../fixtures/newerJobs.ts', import.meta.url).pathname
let db: TestDatabase
let sql: postgres.Sql
let older: RunningServer
let newer: RunningServer | undefined

beforeAll(async () => {
  db = await createTestDatabase('rolling')
  sql = sqlClient(db.url)
  older = await startTestServer(db.url, { WORKER_COUNT: '1', CRON_REMOVE_OLD_WORKER_JOBS: 'off' })
})
afterAll(async () => {
  await newer?.stop()
  await older?.stop()
  await sql.end()
  await db.drop()
})

const metric = async (server: RunningServer, name: string) => {
  const text = await (await fetch(`${server.url}/metrics`)).text()
  const line = text.split('\n').find((l) => l.startsWith(`${name} `))
  return line ? Number(line.split(' ')[1]) : undefined
}

describe('a job of a type only the newer server knows', () => {
  test('waits, visible, while only the older server runs, and runs once the newer one is up', async () => {
    const [job] = await sql`INSERT INTO worker_jobs (type, data) VALUES ('newType', '{}') RETURNING id`
    // A job the older server can run, submitted after: once it is done, the older server has claimed past the new type.
    const marker = await older.workerManager.submitJob({ type: 'noop' })
    await waitFor(async () => (await sql`SELECT 1 FROM worker_jobs WHERE id = ${marker.id} AND finished IS NOT NULL`)[0], { what: 'the marker job' })
    const [waiting] = await sql`SELECT started, finished FROM worker_jobs WHERE id = ${job!.id}`
    expect(waiting).toEqual({ started: null, finished: null })
    expect(await metric(older, 'worker_jobs_unrunnable')).toBe(1)

    const config = loadConfig({ ...TEST_ENV, LOG_LEVEL: 'warn', WORKER_LOG_LEVEL: 'warn', DATABASE_URL: db.url, WORKER_COUNT: '1', CRON_REMOVE_OLD_WORKER_JOBS: 'off' })
    newer = await startServer(config, { jobModules: [TEST_JOB_MODULE, NEWER_MODULE], log: createLogger({ level: 'warn' }) })
    await newer.ready
    const done = await waitFor(async () => (await sql`SELECT * FROM worker_jobs WHERE id = ${job!.id} AND finished IS NOT NULL`)[0], {
      what: 'the new type to run on the newer server',
    })
    expect(done.success).toBe(true)
    expect(done.attempt).toBe(1)
    expect(older.workerManager.statusWithoutCounts().some((w) => w.id === done.locked_by)).toBe(false)
    expect(await metric(newer, 'worker_jobs_unrunnable')).toBe(0)
    // Both servers are known by the types they register.
    const servers = await sql`SELECT job_types FROM worker_servers ORDER BY array_length(job_types, 1)`
    expect(servers).toHaveLength(2)
    expect(servers[0]!.job_types).not.toContain('newType')
    expect(servers[1]!.job_types).toContain('newType')
  })
})
