import { describe, expect, test } from 'bun:test'
import { availableParallelism } from 'node:os'
import { ConfigError, loadConfig } from '../../src/server/config'

const expectBad = (env: Record<string, string>, name: string) => {
  let err: unknown
  try {
    loadConfig(env)
  } catch (e) {
    err = e
  }
  expect(err).toBeInstanceOf(ConfigError)
  const msg = (err as Error).message
  expect(msg).toContain(name)
  expect(msg.includes('\n')).toBe(false)
  return msg
}

describe('loadConfig', () => {
  test('defaults', () => {
    const c = loadConfig({})
    expect(c.PORT).toBe(3000)
    expect(c.WORKER_COUNT).toBe(availableParallelism())
    expect(c.LOG_LEVEL).toBe('info')
    expect(c.CRON_WATCH_CHAIN).toBe('*/30 * * * * *')
    expect(c.CRON_REMOVE_OLD_WORKER_JOBS).toBe('0 2 * * *')
    expect(c.CHAIN_MAX_BLOCK_RANGE).toBe(500)
    // Outside production the dev wallet (anvil's first account) is the default.
    expect(c.SERVER_WALLET_PRIVATE_KEY).toMatch(/^0x[0-9a-f]{64}$/)
  })

  test('parses explicit values', () => {
    const c = loadConfig({ WORKER_COUNT: '0', PORT: '8080', CRON_WATCH_CHAIN: 'off', LOG_PRETTY: 'true' })
    expect(c.WORKER_COUNT).toBe(0)
    expect(c.PORT).toBe(8080)
    expect(c.CRON_WATCH_CHAIN).toBeNull()
    expect(c.LOG_PRETTY).toBe(true)
    expect(loadConfig({ WORKER_COUNT: 'cpus' }).WORKER_COUNT).toBe(availableParallelism())
  })

  test('empty strings fall back to defaults', () => {
    expect(loadConfig({ PORT: '' }).PORT).toBe(3000)
  })

  test('production has no default wallet', () => {
    expect(loadConfig({ NODE_ENV: 'production' }).SERVER_WALLET_PRIVATE_KEY).toBeUndefined()
  })

  test.each([
    [{ WORKER_COUNT: '-1' }, 'WORKER_COUNT'],
    [{ WORKER_COUNT: 'many' }, 'WORKER_COUNT'],
    [{ WORKER_COUNT: '1.5' }, 'WORKER_COUNT'],
    [{ PORT: '70000' }, 'PORT'],
    [{ PORT: 'abc' }, 'PORT'],
    [{ DATABASE_URL: 'mysql://x' }, 'DATABASE_URL'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    [{ WORKER_LOG_LEVEL: 'verbose' }, 'WORKER_LOG_LEVEL'],
    [{ CHAIN_RPC_URL: 'not a url' }, 'CHAIN_RPC_URL'],
    [{ SERVER_WALLET_PRIVATE_KEY: '0x1234' }, 'SERVER_WALLET_PRIVATE_KEY'],
    [{ WORKER_CONCURRENCY: '0' }, 'WORKER_CONCURRENCY'],
    [{ CRON_WATCH_CHAIN: 'every minute' }, 'CRON_WATCH_CHAIN'],
    [{ CRON_REMOVE_OLD_WORKER_JOBS: '61 * * * *' }, 'CRON_REMOVE_OLD_WORKER_JOBS'],
    [{ CHAIN_MAX_BLOCK_RANGE: '0' }, 'CHAIN_MAX_BLOCK_RANGE'],
    [{ LOG_PRETTY: 'maybe' }, 'LOG_PRETTY'],
    [{ NODE_ENV: 'staging' }, 'NODE_ENV'],
  ])('rejects %p naming %s', (env, name) => {
    expectBad(env as Record<string, string>, name)
  })

  test('the message says what was expected and what was given', () => {
    const msg = expectBad({ WORKER_COUNT: '-1' }, 'WORKER_COUNT')
    expect(msg).toContain('"cpus"')
    expect(msg).toContain('"-1"')
  })
})
