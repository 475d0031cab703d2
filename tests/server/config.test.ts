import { describe, expect, test } from 'bun:test'
import { availableParallelism } from 'node:os'
import { ConfigError, loadConfig, loadEnvConfig } from '../../src/server/config'

const expectBad = (env: Record<string, string>, name: string, load: typeof loadEnvConfig = loadEnvConfig) => {
  let err: unknown
  try {
    load(env)
  } catch (e) {
    err = e
  }
  expect(err).toBeInstanceOf(ConfigError)
  const msg = (err as Error).message
  expect(msg).toContain(name)
  expect(msg.includes('\n')).toBe(false)
  return msg
}

const DB = 'postgres://postgres@127.0.0.1:5432/postgres'
const RPC = 'http://127.0.0.1:8545'

describe('loadEnvConfig', () => {
  test('defaults', () => {
    const c = loadEnvConfig({})
    expect(c.NODE_ENV).toBe('development')
    expect(c.PORT).toBe(3000)
    expect(c.WORKER_COUNT).toBe(availableParallelism())
    expect(c.LOG_LEVEL).toBe('info')
    expect(c.CRON_WATCH_CHAIN).toBe('*/30 * * * * *')
    expect(c.CRON_REMOVE_OLD_WORKER_JOBS).toBe('0 2 * * *')
    expect(c.CHAIN_MAX_BLOCK_RANGE).toBe(500)
    expect(c.DEV_DATA_DIR).toBe('.data')
    // No default: unset, `npm start` starts an embedded Postgres and a local anvil.
    expect(c.DATABASE_URL).toBeUndefined()
    expect(c.CHAIN_RPC_URL).toBeUndefined()
    // Outside production the dev wallet (anvil's first account) is the default.
    expect(c.SERVER_WALLET_PRIVATE_KEY).toMatch(/^0x[0-9a-f]{64}$/)
  })

  test('parses explicit values', () => {
    const c = loadEnvConfig({ WORKER_COUNT: '0', PORT: '8080', CRON_WATCH_CHAIN: 'off', LOG_PRETTY: 'true', DATABASE_URL: DB, CHAIN_RPC_URL: RPC, DEV_DATA_DIR: '/tmp/x' })
    expect(c.WORKER_COUNT).toBe(0)
    expect(c.PORT).toBe(8080)
    expect(c.CRON_WATCH_CHAIN).toBeNull()
    expect(c.LOG_PRETTY).toBe(true)
    expect(c.DATABASE_URL).toBe(DB)
    expect(c.CHAIN_RPC_URL).toBe(RPC)
    expect(c.DEV_DATA_DIR).toBe('/tmp/x')
    expect(loadEnvConfig({ WORKER_COUNT: 'cpus' }).WORKER_COUNT).toBe(availableParallelism())
  })

  test('empty strings fall back to defaults', () => {
    expect(loadEnvConfig({ PORT: '' }).PORT).toBe(3000)
    expect(loadEnvConfig({ DATABASE_URL: '', CHAIN_RPC_URL: '' }).DATABASE_URL).toBeUndefined()
  })

  test('the test environment may leave both service URLs unset too', () => {
    const c = loadEnvConfig({ NODE_ENV: 'test' })
    expect(c.DATABASE_URL).toBeUndefined()
    expect(c.CHAIN_RPC_URL).toBeUndefined()
  })

  test('production requires DATABASE_URL, then CHAIN_RPC_URL', () => {
    expect(expectBad({ NODE_ENV: 'production' }, 'DATABASE_URL')).toBe('Missing environment variable DATABASE_URL: required when NODE_ENV=production')
    expect(expectBad({ NODE_ENV: 'production', DATABASE_URL: '' }, 'DATABASE_URL')).toContain('required when NODE_ENV=production')
    expect(expectBad({ NODE_ENV: 'production', DATABASE_URL: DB }, 'CHAIN_RPC_URL')).toBe(
      'Missing environment variable CHAIN_RPC_URL: required when NODE_ENV=production',
    )
    const c = loadEnvConfig({ NODE_ENV: 'production', DATABASE_URL: DB, CHAIN_RPC_URL: RPC })
    expect(c.DATABASE_URL).toBe(DB)
    expect(c.CHAIN_RPC_URL).toBe(RPC)
  })

  test('production has no default wallet', () => {
    expect(loadEnvConfig({ NODE_ENV: 'production', DATABASE_URL: DB, CHAIN_RPC_URL: RPC }).SERVER_WALLET_PRIVATE_KEY).toBeUndefined()
  })

  test('in production a bad service URL still names the variable as invalid', () => {
    expect(expectBad({ NODE_ENV: 'production', DATABASE_URL: 'mysql://x', CHAIN_RPC_URL: RPC }, 'DATABASE_URL')).toContain('Invalid environment variable DATABASE_URL')
    expect(expectBad({ NODE_ENV: 'production', DATABASE_URL: DB, CHAIN_RPC_URL: 'nope' }, 'CHAIN_RPC_URL')).toContain('Invalid environment variable CHAIN_RPC_URL')
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

describe('loadConfig (servers started without the development services)', () => {
  test('requires both service URLs in every environment', () => {
    expect(expectBad({}, 'DATABASE_URL', loadConfig)).toContain('Missing environment variable DATABASE_URL')
    expect(expectBad({ NODE_ENV: 'test', DATABASE_URL: DB }, 'CHAIN_RPC_URL', loadConfig)).toContain('Missing environment variable CHAIN_RPC_URL')
    const c = loadConfig({ NODE_ENV: 'test', DATABASE_URL: DB, CHAIN_RPC_URL: RPC })
    expect(c.DATABASE_URL).toBe(DB)
    expect(c.CHAIN_RPC_URL).toBe(RPC)
  })

  test('reports an invalid value before a missing one', () => {
    expect(expectBad({ PORT: 'abc' }, 'PORT', loadConfig)).toContain('Invalid environment variable PORT')
  })
})
