import { afterAll, beforeAll, beforeEach, describe, expect, setDefaultTimeout, test } from 'bun:test'
import type { Subprocess } from 'bun'
import { watchChain } from '../../src/server/chain/watcher'
import { createLogger } from '../../src/server/log'
import { type Anvil, startAnvil } from '../helpers/anvil'
import { createChainTestApp } from '../helpers/chainApp'
import {
  actualNotificationKeys,
  expectedNotificationKeys,
  mineTransfers,
  resetWatchState,
  setupTokenFixture,
  type TokenFixture,
} from '../helpers/chainFixture'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { startServerProcess } from '../helpers/server'
import { waitFor } from '../helpers/wait'

setDefaultTimeout(120_000)

const CHILD = new URL('../fixtures/watchChainChild.ts', import.meta.url).pathname
const log = createLogger({ level: 'silent' })

let anvil: Anvil
let db: TestDatabase
let f: TokenFixture

beforeAll(async () => {
  ;[anvil, db] = await Promise.all([startAnvil(), createTestDatabase('chain_crash')])
  f = await setupTokenFixture(anvil.client, db.url)
})

afterAll(async () => {
  await f?.sql.end()
  await anvil?.stop()
  await db?.drop()
})

beforeEach(() => resetWatchState(f))

async function firstJsonLine(proc: Subprocess, predicate: (v: any) => boolean, timeoutMs: number): Promise<any> {
  const reader = (proc.stdout as ReadableStream<Uint8Array>).getReader()
  const decoder = new TextDecoder()
  let buf = ''
  const deadline = Date.now() + timeoutMs
  try {
    while (Date.now() < deadline) {
      const timer = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no matching line from the child in time')), deadline - Date.now()))
      const { value, done } = await Promise.race([reader.read(), timer])
      if (done) break
      buf += decoder.decode(value, { stream: true })
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl)
        buf = buf.slice(nl + 1)
        try {
          const v = JSON.parse(line)
          if (predicate(v)) return v
        } catch {}
      }
    }
  } finally {
    reader.releaseLock()
  }
  throw new Error(`child ended without a matching line (exit ${proc.exitCode}): ${await new Response(proc.stderr as ReadableStream).text()}`)
}

describe('watchChain killed halfway', () => {
  test('SIGKILL inside a range transaction: nothing of that range survives, and the next run gives exactly N', async () => {
    const { start, end } = await mineTransfers(f, 30)
    const child = Bun.spawn([process.execPath, CHILD], {
      env: {
        ...process.env,
        NODE_ENV: 'test',
        LOG_LEVEL: 'silent',
        DATABASE_URL: db.url,
        CHAIN_RPC_URL: anvil.url,
        CHAIN_START_BLOCK: String(start),
        CHAIN_MAX_BLOCK_RANGE: '3',
        PAUSE_AT_RANGE: '4',
      },
      stdout: 'pipe',
      stderr: 'pipe',
    })
    try {
      const paused = await firstJsonLine(child, (v) => v.paused === true, 30_000)
      // The child is inside the 4th range's transaction: blocks start+9 .. start+11.
      expect([paused.fromBlock, paused.toBlock]).toEqual([Number(start) + 9, Number(start) + 11])
      const committed = await expectedNotificationKeys(f, start, start + 8n)
      const inTx = await expectedNotificationKeys(f, start, start + 11n)
      expect(paused.notificationsInTx).toBe(inTx.length)
      // Outside the transaction only the three committed ranges are visible, and the cursor is at their end.
      expect(await actualNotificationKeys(f)).toEqual(committed)
      const [cursor] = await f.sql`SELECT block_number FROM chain_cursors`
      expect(BigInt(cursor!.block_number)).toBe(start + 8n)
      // The child holds the watchChain lock.
      const lockHolders = () =>
        f.sql`SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'watchChain-child' AND a.datname = ${db.name}`
      expect((await lockHolders()).length).toBe(1)

      child.kill('SIGKILL')
      await child.exited
      expect(child.signalCode).toBe('SIGKILL')
      // Postgres ends the dead process's sessions, which rolls the open range back and releases the lock.
      await waitFor(async () => (await lockHolders()).length === 0, { timeoutMs: 10_000, what: 'the lock to be released' })
      expect(await actualNotificationKeys(f)).toEqual(committed)

      const app = createChainTestApp(db.url, anvil.url, { CHAIN_START_BLOCK: String(start), CHAIN_MAX_BLOCK_RANGE: '3' })
      try {
        const res = await watchChain(app, { log })
        expect(res).toMatchObject({ fromBlock: String(start + 9n), toBlock: String(end), events: 21 })
      } finally {
        await app.close()
      }
      expect(await actualNotificationKeys(f)).toEqual(await expectedNotificationKeys(f, start, end))
      const [ledger] = await f.sql`SELECT count(*)::int AS n, count(DISTINCT (block_hash, log_index))::int AS d FROM chain_events`
      expect(ledger).toEqual({ n: 30, d: 30 })
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    }
  })

  test('the real server: its worker SIGKILLed while watchChain runs, the cron carries on and the result is exactly N', async () => {
    const N = 150
    const { start, end } = await mineTransfers(f, N)
    const server = await startServerProcess({
      DATABASE_URL: db.url,
      CHAIN_RPC_URL: anvil.url,
      WORKER_COUNT: '1',
      CRON_WATCH_CHAIN: '* * * * * *',
      CHAIN_START_BLOCK: String(start),
      CHAIN_MAX_BLOCK_RANGE: '1',
      WORKER_RESTART_MAX_BACKOFF_MS: '200',
    })
    try {
      const events = async () => ((await f.sql`SELECT count(*)::int AS n FROM chain_events`)[0]!.n as number)
      await waitFor(async () => (await events()) >= 10, { timeoutMs: 30_000, intervalMs: 5, what: 'watchChain to start' })
      const spawned = server.logs.filter((l) => l.msg === 'worker spawned')
      const workerPid = spawned[spawned.length - 1]!.pid as number
      process.kill(workerPid, 'SIGKILL')
      const atKill = await events()
      expect(atKill).toBeLessThan(N)

      await waitFor(async () => (await events()) === N, { timeoutMs: 60_000, intervalMs: 50, what: 'all events processed after the crash' })
      expect(await actualNotificationKeys(f)).toEqual(await expectedNotificationKeys(f, start, end))
      // The killed run went back to pending (an interruption is not a failure) and ran again; later runs
      // (new worker) finished the work.
      const finishedJobs = () => f.sql`SELECT success, result FROM worker_jobs WHERE type = 'watchChain' AND finished IS NOT NULL ORDER BY id`
      // The run that committed the last range records its outcome just after; wait for it.
      await waitFor(async () => (await finishedJobs()).some((j) => j.success === true && Number(j.result.events) > 0), {
        timeoutMs: 10_000,
        what: 'a successful watchChain run after the crash',
      })
      const [rerun] = await f.sql`SELECT attempt, finished FROM worker_jobs
        WHERE type = 'watchChain' AND last_error = 'interrupted: its worker process exited'`
      expect(rerun!.attempt).toBe(2)
      await waitFor(async () => (await f.sql`SELECT 1 FROM worker_jobs WHERE type = 'watchChain' AND attempt = 2 AND finished IS NOT NULL`)[0], {
        what: 'the interrupted run to run again',
      })
      expect(server.logs.filter((l) => l.msg === 'worker spawned').length).toBeGreaterThanOrEqual(2)
    } finally {
      await server.stop()
    }
  })
})
