import { readFileSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { CHILD_GC_TIMER_MS, childEnv } from '../../src/server/workers/manager'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type ServerProcess, startServerProcess } from '../helpers/server'
import { workersOf } from '../helpers/workers'

/**
 * The collector settings a worker child is started with. Bun's one-second idle-collection timer set the
 * pickup p99 (bench/README.md, "Where the pickup latency goes"), so a child runs it every 30 s instead;
 * the operator's own setting of that timer is never overridden. Checked on the function and on the
 * environment of real children (/proc/<pid>/environ).
 */
let db: TestDatabase
const servers: ServerProcess[] = []

beforeAll(async () => {
  db = await createTestDatabase('child_env')
})
afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop('SIGTERM')))
  await db.drop()
})

/** The environment a running process was started with. */
function environOf(pid: number): Record<string, string> {
  const raw = readFileSync(`/proc/${pid}/environ`, 'utf8')
  return Object.fromEntries(
    raw
      .split('\0')
      .filter((kv) => kv.includes('='))
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  )
}

async function childEnvironOf(env: Record<string, string>): Promise<Record<string, string>> {
  const server = await startServerProcess({ DATABASE_URL: db.url, WORKER_COUNT: '1', CRON_REMOVE_OLD_WORKER_JOBS: 'off', ...env })
  servers.push(server)
  const [worker] = await workersOf(server)
  return environOf(worker!.pid)
}

describe('childEnv', () => {
  test('sets the heap hint and the 30 s collection timer, and keeps the rest of the environment', () => {
    const env = childEnv(80, { PATH: '/usr/bin', DATABASE_URL: 'postgres://x' })
    expect(env).toEqual({
      PATH: '/usr/bin',
      DATABASE_URL: 'postgres://x',
      BUN_JSC_forceRAMSize: '80000000',
      BUN_GC_TIMER_INTERVAL: String(CHILD_GC_TIMER_MS),
    })
    expect(CHILD_GC_TIMER_MS).toBe(30_000)
  })

  test('a hint of 0 leaves the heap to Bun but still sets the timer', () => {
    const env = childEnv(0, { PATH: '/usr/bin' })
    expect(env.BUN_JSC_forceRAMSize).toBeUndefined()
    expect(env.BUN_GC_TIMER_INTERVAL).toBe('30000')
  })

  test("the operator's own timer setting wins", () => {
    expect(childEnv(80, { BUN_GC_TIMER_INTERVAL: '5000' }).BUN_GC_TIMER_INTERVAL).toBe('5000')
    const disabled = childEnv(80, { BUN_GC_TIMER_DISABLE: '1' })
    expect(disabled.BUN_GC_TIMER_DISABLE).toBe('1')
    expect(disabled.BUN_GC_TIMER_INTERVAL).toBeUndefined()
  })

  test('does not change the environment it was given', () => {
    const given = { PATH: '/usr/bin' }
    childEnv(80, given)
    expect(given).toEqual({ PATH: '/usr/bin' })
  })
})

describe('a real worker child', () => {
  test('runs with the heap hint and the 30 s timer by default', async () => {
    const env = await childEnvironOf({})
    expect(env.BUN_JSC_forceRAMSize).toBe('80000000')
    expect(env.BUN_GC_TIMER_INTERVAL).toBe('30000')
    expect(env.DATABASE_URL).toBe(db.url)
  })

  test("runs with the operator's BUN_GC_TIMER_DISABLE and WORKER_HEAP_HINT_MB=0 as given", async () => {
    const env = await childEnvironOf({ BUN_GC_TIMER_DISABLE: '1', WORKER_HEAP_HINT_MB: '0' })
    expect(env.BUN_GC_TIMER_DISABLE).toBe('1')
    expect(env.BUN_GC_TIMER_INTERVAL).toBeUndefined()
    expect(env.BUN_JSC_forceRAMSize).toBeUndefined()
  })
})
