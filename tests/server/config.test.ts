import { describe, expect, test } from 'bun:test'
import { availableParallelism } from 'node:os'
import { ConfigError, loadConfig, loadEnvConfig, maskUrl } from '../../src/server/config'

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
const BASE = 'https://app.example.com'
/** Everything production requires. */
const PROD = { NODE_ENV: 'production', DATABASE_URL: DB, CHAIN_RPC_URL: RPC, BASE_URL: BASE, SESSION_SECRET: 's'.repeat(32) }

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
    expect(c.WORKER_LEASE_MS).toBe(10_000)
    expect(c.DB_POOL_SIZE).toBe(10)
    expect(c.WORKER_DB_POOL_SIZE).toBe(3)
    expect(c.DB_CONNECT_TIMEOUT_MS).toBe(10_000)
    expect(c.DB_STATEMENT_TIMEOUT_MS).toBe(60_000)
    expect(c.WORKER_DEFAULT_JOB_TIMEOUT_MS).toBe(900_000)
    expect(c.WORKER_UNKNOWN_TYPE_FAIL_AFTER_MS).toBe(3_600_000)
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

  test('production requires DATABASE_URL, then CHAIN_RPC_URL, BASE_URL and SESSION_SECRET', () => {
    expect(expectBad({ NODE_ENV: 'production' }, 'DATABASE_URL')).toBe('Missing environment variable DATABASE_URL: required when NODE_ENV=production')
    expect(expectBad({ NODE_ENV: 'production', DATABASE_URL: '' }, 'DATABASE_URL')).toContain('required when NODE_ENV=production')
    expect(expectBad({ NODE_ENV: 'production', DATABASE_URL: DB }, 'CHAIN_RPC_URL')).toBe(
      'Missing environment variable CHAIN_RPC_URL (or CHAINS): required when NODE_ENV=production',
    )
    expect(expectBad({ NODE_ENV: 'production', DATABASE_URL: DB, CHAIN_RPC_URL: RPC }, 'BASE_URL')).toBe(
      'Missing environment variable BASE_URL: required when NODE_ENV=production',
    )
    expect(expectBad({ NODE_ENV: 'production', DATABASE_URL: DB, CHAIN_RPC_URL: RPC, BASE_URL: BASE }, 'SESSION_SECRET')).toBe(
      'Missing environment variable SESSION_SECRET: required when NODE_ENV=production',
    )
    const c = loadEnvConfig(PROD)
    expect(c.DATABASE_URL).toBe(DB)
    expect(c.CHAIN_RPC_URL).toBe(RPC)
  })

  test('production has no default wallet', () => {
    expect(loadEnvConfig(PROD).SERVER_WALLET_PRIVATE_KEY).toBeUndefined()
  })

  test('access variables: secrets of 32+ characters never echoed, wallets and origins checked, loopback by default', () => {
    expect(loadEnvConfig({}).HOST).toBe('127.0.0.1')
    for (const name of ['SESSION_SECRET', 'ADMIN_API_TOKEN', 'METRICS_TOKEN']) {
      const message = expectBad({ [name]: 'short-secret-value' }, name)
      expect(message).toBe(`Invalid environment variable ${name}: must be at least 32 characters`)
      expect(message).not.toContain('short-secret-value')
    }
    expect(expectBad({ ADMIN_WALLETS: '0x1234' }, 'ADMIN_WALLETS')).toContain('expected 0x-prefixed 20-byte addresses')
    const wallets = loadEnvConfig({ ADMIN_WALLETS: ` 0xAbCdEf0123456789aBcDeF0123456789abCDef01 ,, 0x${'1'.repeat(40)}` }).ADMIN_WALLETS
    expect(wallets).toEqual(['0xabcdef0123456789abcdef0123456789abcdef01', `0x${'1'.repeat(40)}`])
    expect(expectBad({ CORS_ORIGINS: 'https://a.example/path' }, 'CORS_ORIGINS')).toContain('expected an origin')
    expect(expectBad({ CORS_ORIGINS: 'ftp://a.example' }, 'CORS_ORIGINS')).toContain('expected an origin')
    expect(loadEnvConfig({ CORS_ORIGINS: 'https://a.example, http://localhost:5173' }).CORS_ORIGINS).toEqual(['https://a.example', 'http://localhost:5173'])
    expect(expectBad({ BASE_URL: 'ws://a.example' }, 'BASE_URL')).toContain('expected an http or https URL')
    expect(expectBad({ BASE_URL: 'https://user:pw@a.example' }, 'BASE_URL')).toContain('without credentials')
    expect(expectBad({ SUBMIT_BATCH_MAX: '0' }, 'SUBMIT_BATCH_MAX')).toContain('>= 1')
    expect(expectBad({ SESSION_TTL_MS: '1000' }, 'SESSION_TTL_MS')).toContain('>= 60000')
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
    [{ WORKER_COUNT: '100000' }, 'WORKER_COUNT'],
    [{ WORKER_COUNT: '257' }, 'WORKER_COUNT'],
    [{ CHAIN_RPC_URL: 'ftp://x' }, 'CHAIN_RPC_URL'],
    [{ CHAIN_RPC_URL: 'file:///etc/passwd' }, 'CHAIN_RPC_URL'],
    [{ HOST: '999.1.1.1' }, 'HOST'],
    [{ HOST: '1.2.3' }, 'HOST'],
    [{ HOST: 'under_score' }, 'HOST'],
    [{ HOST: '[::1]' }, 'HOST'],
    [{ HOST: '-leading.example' }, 'HOST'],
    [{ DATABASE_URL: 'postgres://u:p@h:99999/db' }, 'DATABASE_URL'],
    [{ DATABASE_URL: 'postgres://u:p@h:abc/db' }, 'DATABASE_URL'],
    [{ DATABASE_URL: 'postgres://u:p@h:0/db' }, 'DATABASE_URL'],
    [{ WORKER_LEASE_MS: '999' }, 'WORKER_LEASE_MS'],
    [{ DB_POOL_SIZE: '0' }, 'DB_POOL_SIZE'],
    [{ DB_POOL_SIZE: '1001' }, 'DB_POOL_SIZE'],
    [{ WORKER_DB_POOL_SIZE: '0' }, 'WORKER_DB_POOL_SIZE'],
    [{ WORKER_DB_POOL_SIZE: '101' }, 'WORKER_DB_POOL_SIZE'],
    [{ DB_CONNECT_TIMEOUT_MS: '99' }, 'DB_CONNECT_TIMEOUT_MS'],
    [{ DB_STATEMENT_TIMEOUT_MS: '-1' }, 'DB_STATEMENT_TIMEOUT_MS'],
    [{ WORKER_DEFAULT_JOB_TIMEOUT_MS: '999' }, 'WORKER_DEFAULT_JOB_TIMEOUT_MS'],
    // Past setTimeout's 2^31-1 ms a timer fires at once instead of never.
    [{ WORKER_DEFAULT_JOB_TIMEOUT_MS: '2147483648' }, 'WORKER_DEFAULT_JOB_TIMEOUT_MS'],
    [{ WORKER_UNKNOWN_TYPE_FAIL_AFTER_MS: '999' }, 'WORKER_UNKNOWN_TYPE_FAIL_AFTER_MS'],
  ])('rejects %p naming %s', (env, name) => {
    expectBad(env as Record<string, string>, name)
  })

  test('the message says what was expected and what was given', () => {
    const msg = expectBad({ WORKER_COUNT: '-1' }, 'WORKER_COUNT')
    expect(msg).toContain('"cpus"')
    expect(msg).toContain('"-1"')
  })
})

describe('values that look right but cannot work', () => {
  const N = 'FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141'

  test('WORKER_COUNT is capped at 256, and so is "cpus"', () => {
    expect(loadEnvConfig({ WORKER_COUNT: '256' }).WORKER_COUNT).toBe(256)
    expect(expectBad({ WORKER_COUNT: '100000' }, 'WORKER_COUNT')).toContain('<= 256')
    expect(loadEnvConfig({ WORKER_COUNT: 'cpus' }).WORKER_COUNT).toBeLessThanOrEqual(256)
  })

  test('CHAIN_RPC_URL takes http and https only (the chain clients speak JSON-RPC over HTTP)', () => {
    for (const url of ['http://h:8545', 'https://h/v3/x']) expect(loadEnvConfig({ CHAIN_RPC_URL: url }).CHAIN_RPC_URL).toBe(url)
    for (const url of ['ws://h:8546', 'wss://h']) expect(expectBad({ CHAIN_RPC_URL: url }, 'CHAIN_RPC_URL')).toContain('http or https')
    expect(expectBad({ CHAIN_RPC_URL: 'file:///etc/passwd' }, 'CHAIN_RPC_URL')).toContain('http or https')
  })

  test('SERVER_WALLET_PRIVATE_KEY must be in 1..n-1 of secp256k1, and is never echoed', () => {
    const ok = ['0x0000000000000000000000000000000000000000000000000000000000000001', `0x${N.slice(0, -1)}0`]
    for (const key of ok) expect(loadEnvConfig({ SERVER_WALLET_PRIVATE_KEY: key }).SERVER_WALLET_PRIVATE_KEY).toBe(key as `0x${string}`)
    const bad = [`0x${'0'.repeat(64)}`, `0x${N}`, `0x${N.toLowerCase()}`, `0x${N.slice(0, -1)}2`, `0x${'f'.repeat(64)}`, '0xdeadbeef', `0x${'ab'.repeat(33)}`]
    for (const key of bad) {
      const msg = expectBad({ SERVER_WALLET_PRIVATE_KEY: key }, 'SERVER_WALLET_PRIVATE_KEY')
      expect(msg).not.toContain(key.slice(2, 10))
      expect(msg).not.toContain('got')
    }
  })

  test('a cron without a next run is refused, saying why', () => {
    const msg = expectBad({ CRON_WATCH_CHAIN: '0 0 30 2 *' }, 'CRON_WATCH_CHAIN')
    expect(msg).toContain('no future run')
    expect(msg).toContain('"0 0 30 2 *"')
    expect(expectBad({ CRON_REMOVE_OLD_WORKER_JOBS: '0 0 31 4 *' }, 'CRON_REMOVE_OLD_WORKER_JOBS')).toContain('no future run')
  })

  test('HOST takes IPv4, IPv6 and hostnames', () => {
    for (const host of ['0.0.0.0', '127.0.0.1', '::', '::1', 'fe80::1', 'localhost', 'api-1.example.com', 'example.com.']) {
      expect(loadEnvConfig({ HOST: host }).HOST).toBe(host)
    }
  })

  test('DATABASE_URL: a bad port is named, the password masked', () => {
    const msg = expectBad({ DATABASE_URL: 'postgres://u:s3cretpw@h:99999/db' }, 'DATABASE_URL')
    expect(msg).toBe('Invalid environment variable DATABASE_URL: port 99999 is out of range 1..65535 (got "postgres://u:***@h:99999/db")')
    expect(expectBad({ DATABASE_URL: 'postgres://u:s3cretpw@h:abc/db' }, 'DATABASE_URL')).toContain('port "abc" is not a number (got "postgres://u:***@h:abc/db")')
    // A password with an unencoded "/" or "@" stays masked.
    const odd = expectBad({ DATABASE_URL: 'postgres://u:s3/cr@tpw@h:99999/db' }, 'DATABASE_URL')
    expect(odd).toContain('port 99999')
    expect(odd).not.toMatch(/s3|cr|tpw/)
    expect(loadEnvConfig({ DATABASE_URL: 'postgresql://u:p@[::1]:5432/db' }).DATABASE_URL).toBe('postgresql://u:p@[::1]:5432/db')
  })

  test('a URL in any message has its password masked', () => {
    expect(expectBad({ CHAIN_RPC_URL: 'ftp://u:s3cretpw@x' }, 'CHAIN_RPC_URL')).not.toContain('s3cretpw')
    expect(expectBad({ NODE_ENV: 'production', DATABASE_URL: 'mysql://u:s3cretpw@x/db' }, 'DATABASE_URL')).not.toContain('s3cretpw')
  })
})

describe('maskUrl', () => {
  test.each([
    ['postgres://u:secret@h:5432/db', 'postgres://u:***@h:5432/db'],
    ['postgres://u@h/db', 'postgres://u@h/db'],
    ['postgres://h/db', 'postgres://h/db'],
    ['postgres://u:secret@h:99999/db', 'postgres://u:***@h:99999/db'],
    ['postgres://u:se/c@ret@h:abc/db', 'postgres://u:***@h:abc/db'],
    ['u:secret@h', 'u:***@h'],
  ])('%s -> %s', (input, masked) => {
    expect(maskUrl(input)).toBe(masked)
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

describe('CHAINS (several chains)', () => {
  const base = { NODE_ENV: 'test', DATABASE_URL: DB }
  const chains = (v: unknown) => ({ ...base, CHAINS: JSON.stringify(v) })

  test('each entry gets the global defaults unless it sets its own, and its own tag suffix', () => {
    const c = loadConfig({
      ...chains([
        { id: 8453, rpcUrls: ['https://a.example/v3/KEY1', 'https://b.example/KEY2'], confirmations: 3 },
        { id: 1, rpcUrls: ['https://c.example'], startBlock: 100, maxBlockRange: 50 },
      ]),
      CHAIN_CONFIRMATIONS: '1',
      CHAIN_MAX_BLOCK_RANGE: '200',
    })
    expect(c.chains).toEqual([
      { id: 8453, rpcUrls: ['https://a.example/v3/KEY1', 'https://b.example/KEY2'], confirmations: 3, startBlock: undefined, maxBlockRange: 200, tagSuffix: ':8453' },
      { id: 1, rpcUrls: ['https://c.example'], confirmations: 1, startBlock: 100, maxBlockRange: 50, tagSuffix: ':1' },
    ])
  })

  test('the CHAIN_RPC_URL shorthand is one chain with the plain tags', () => {
    expect(loadConfig({ ...base, CHAIN_RPC_URL: RPC }).chains).toEqual([
      { id: undefined, rpcUrls: [RPC], confirmations: 0, startBlock: undefined, maxBlockRange: 500, tagSuffix: '' },
    ])
    expect(loadConfig({ ...base, CHAIN_RPC_URL: RPC, CHAIN_ID: '10' }).chains[0]).toMatchObject({ id: 10, tagSuffix: '' })
  })

  test('a bad entry names the entry and the field, and never echoes the variable (it holds API keys)', () => {
    const cases: [unknown, string][] = [
      [[{ id: 1, rpcUrls: ['https://ok.example/KEYSECRET', 'ftp://x/KEYSECRET'] }], 'CHAINS: [0].rpcUrls[1]: expected an http or https URL'],
      [[{ id: 1, rpcUrls: [] }], 'CHAINS: [0].rpcUrls:'],
      [[{ id: 0, rpcUrls: ['https://ok.example/KEYSECRET'] }], 'CHAINS: [0].id:'],
      [[{ id: 1, rpcUrls: ['https://ok.example/KEYSECRET'] }, { id: 1, rpcUrls: ['https://b.example/KEYSECRET'] }], 'CHAINS: [1].id: chain id 1 is listed twice'],
      [[{ id: 1, rpcUrls: ['https://ok.example/KEYSECRET'], rpcUrl: 'x' }], 'CHAINS: [0]:'],
      [[], 'CHAINS:'],
      [{ id: 1 }, 'CHAINS:'],
    ]
    for (const [value, message] of cases) {
      const line = expectBad(chains(value), 'CHAINS')
      expect(line).toContain(`Invalid environment variable ${message}`)
      expect(line).not.toContain('KEYSECRET')
    }
    const notJson = expectBad({ ...base, CHAINS: '[{"id": 1, "rpcUrls": ["https://h/KEYSECRET"' }, 'CHAINS')
    expect(notJson).toContain('expected JSON')
    expect(notJson).not.toContain('KEYSECRET')
  })

  test('CHAINS with CHAIN_RPC_URL or CHAIN_ID is refused; production accepts CHAINS in place of CHAIN_RPC_URL', () => {
    const one = [{ id: 1, rpcUrls: ['https://a.example'] }]
    expect(expectBad({ ...chains(one), CHAIN_RPC_URL: RPC }, 'CHAIN_RPC_URL')).toContain('set CHAINS or the one-chain CHAIN_RPC_URL/CHAIN_ID, not both')
    expect(expectBad({ ...chains(one), CHAIN_ID: '1' }, 'CHAIN_ID')).toContain('not both')
    const prod = loadConfig({ ...chains(one), NODE_ENV: 'production', BASE_URL: BASE, SESSION_SECRET: 's'.repeat(32) })
    expect(prod.chains.map((c) => c.id)).toEqual([1])
  })
})
