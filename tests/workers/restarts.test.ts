import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type ServerProcess, startServerProcess } from '../helpers/server'
import { waitFor } from '../helpers/wait'
import { type WorkerProcess as Worker, workerHealth } from '../helpers/workers'

/**
 * Restarts of killed children, with a real server process and real SIGKILLs.
 *
 * Regression: the restart backoff only reset after a child had lived 30 s, so a child that was killed now
 * and then (OOM killer, an operator) came back after 100, 200, 400, 800, 1600, 3200 ms… although every
 * one of its starts had succeeded. It now resets once a child has been ready for 1 s.
 */
let db: TestDatabase
let server: ServerProcess

beforeAll(async () => {
  db = await createTestDatabase('restarts')
  server = await startServerProcess({ DATABASE_URL: db.url, WORKER_COUNT: '2', CRON_REMOVE_OLD_WORKER_JOBS: 'off' })
})
afterAll(async () => {
  await server?.stop('SIGTERM')
  await db.drop()
})

/** /health, with each worker's pid and id from the server's log (/health names neither). */
const health = () => workerHealth(server)

/** Waits until every slot in `slots` has been seen alive, with the same pid, for longer than `ms`. */
async function upFor(slots: number[], ms: number): Promise<Worker[]> {
  const since = new Map<number, { pid: number; at: number }>()
  return waitFor(
    async () => {
      const { workers } = await health()
      const now = Date.now()
      for (const i of slots) {
        const w = workers[i]!
        const seen = since.get(i)
        if (!w.alive) since.delete(i)
        else if (!seen || seen.pid !== w.pid) since.set(i, { pid: w.pid, at: now })
      }
      return slots.every((i) => since.has(i) && now - since.get(i)!.at > ms) ? workers : null
    },
    { timeoutMs: 10_000, intervalMs: 20, what: `slots ${slots.join(', ')} to be up for ${ms} ms` },
  )
}

describe('restart backoff', () => {
  test('a child killed six times, each time after a successful start, comes back at once every time', async () => {
    const delays: number[] = []
    for (let i = 0; i < 6; i++) {
      // Up (ready) for more than the 1 s after which a start counts as successful.
      const before = (await upFor([0], 1200))[0]!
      expect(before.restarts).toBe(i)
      const killedAt = performance.now()
      process.kill(before.pid, 'SIGKILL')
      const after = await waitFor(
        async () => {
          const w = (await health()).workers[0]!
          return w.alive && w.pid !== before.pid ? w : null
        },
        { timeoutMs: 10_000, intervalMs: 10, what: `slot 0 to come back after kill ${i + 1}` },
      )
      delays.push(Math.round(performance.now() - killedAt))
      expect(after.restarts).toBe(i + 1)
      expect(after.id).not.toBe(before.id)
    }
    console.log(`[restarts] slot 0 back after ${delays.join(', ')} ms (kill to alive with a new pid)`)
    for (const d of delays) expect(d).toBeLessThan(1500)
  }, 50_000)

  let lastKillAt = 0
  let lastKilled: Worker[] = []

  test('both children killed at once: one is back within 2 s', async () => {
    lastKilled = await upFor([0, 1], 1200)
    lastKillAt = performance.now()
    for (const w of lastKilled) process.kill(w.pid, 'SIGKILL')
    const back = await waitFor(
      async () => {
        const { workers } = await health()
        return workers.some((w, i) => w.alive && w.pid !== lastKilled[i]!.pid) ? workers : null
      },
      { timeoutMs: 2000, intervalMs: 10, what: 'a child to be alive again' },
    )
    console.log(`[restarts] both killed: the first back after ${Math.round(performance.now() - lastKillAt)} ms`)
    expect(back.some((w) => w.alive)).toBe(true)
  }, 20_000)

  test('after the kills stop, /health is 200 ok within a few seconds, every child new and counted', async () => {
    expect(lastKilled).toHaveLength(2)
    const ok = await waitFor(
      async () => {
        const h = await health()
        return h.code === 200 ? h : null
      },
      { timeoutMs: 5000, intervalMs: 20, what: '/health to be 200 ok again' },
    )
    console.log(`[restarts] /health 200 ok ${Math.round(performance.now() - lastKillAt)} ms after the last kill`)
    expect(ok.status).toBe('ok')
    expect(ok.workers.map((w) => w.alive)).toEqual([true, true])
    expect(ok.workers.map((w, i) => w.pid !== lastKilled[i]!.pid)).toEqual([true, true])
    expect(ok.workers.map((w) => w.restarts)).toEqual([7, 1])
  }, 10_000)
})
