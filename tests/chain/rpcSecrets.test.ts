import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from 'bun:test'
import postgres from 'postgres'
import { loadEnvConfig } from '../../src/server/config'
import { redactUrl, redactUrls } from '../../src/server/redact'
import { gql } from '../http/client'
import { type Anvil, startAnvil } from '../helpers/anvil'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type RpcProxy, startRpcProxy } from '../helpers/rpcProxy'
import { startServerProcess } from '../helpers/server'
import { waitFor } from '../helpers/wait'

setDefaultTimeout(120_000)

const SECRETS = ['SECRETKEY', 'SECRET2', 'hunter2pw']

let anvil: Anvil
let db: TestDatabase
let sql: postgres.Sql
let proxy: RpcProxy

beforeAll(async () => {
  ;[anvil, db] = await Promise.all([startAnvil(), createTestDatabase('chain_secrets')])
  sql = postgres(db.url, { max: 2, onnotice: () => {} })
  // A provider that fails every request, three ways: a gateway error status, a JSON-RPC error, a 429.
  let n = 0
  proxy = startRpcProxy(anvil.url, {
    answer: () => {
      const k = n++ % 3
      if (k === 0) return { httpStatus: 503, body: 'upstream unavailable' }
      if (k === 1) return { rpcError: { code: -32000, message: 'backend failed' } }
      return { httpStatus: 429, headers: { 'retry-after': '0' } }
    },
  })
})

afterAll(async () => {
  await sql?.end()
  await proxy?.stop()
  await anvil?.stop()
  await db?.drop()
})

describe('redaction', () => {
  test('a URL keeps scheme://host[:port] only, wherever it is in a text', () => {
    expect(redactUrl('https://user:pa/ss@mainnet.example.com:8443/v3/KEY?apikey=K2#f')).toBe('https://mainnet.example.com:8443')
    expect(redactUrl('http://[::1]:8545/KEY')).toBe('http://[::1]:8545')
    expect(redactUrls('HTTP request failed.\n\nURL: https://eth.example.com/v2/KEY?x=1\nRequest body: {"a":1}')).toBe(
      'HTTP request failed.\n\nURL: https://eth.example.com\nRequest body: {"a":1}',
    )
    expect(redactUrls('no url here')).toBe('no url here')
  })

  test('a bad CHAIN_RPC_URL is named without echoing its path, query or password', () => {
    let message = ''
    try {
      loadEnvConfig({ CHAIN_RPC_URL: 'ws://user:hunter2pw@host:1/v3/SECRETKEY?apikey=SECRET2' })
    } catch (err) {
      message = (err as Error).message
    }
    expect(message).toStartWith('Invalid environment variable CHAIN_RPC_URL')
    for (const s of SECRETS) expect(message).not.toContain(s)
  })
})

describe('an API key in CHAIN_RPC_URL', () => {
  test('never reaches worker_jobs, the logs, GraphQL or /metrics', async () => {
    const port = new URL(proxy.url).port
    const secretUrl = `http://user:hunter2pw@127.0.0.1:${port}/v3/SECRETKEY?apikey=SECRET2`
    const server = await startServerProcess({
      DATABASE_URL: db.url,
      CHAIN_RPC_URL: secretUrl,
      WORKER_COUNT: '1',
      CRON_WATCH_CHAIN: '* * * * * *',
      DEPLOY_MULTICALL3_ON_BOOT: 'true',
      LOG_LEVEL: 'debug',
      WORKER_LOG_LEVEL: 'debug',
    })
    try {
      const failed = await waitFor(
        async () => {
          const rows = await sql`SELECT type FROM worker_jobs WHERE finished IS NOT NULL AND success = false`
          const types = new Set(rows.map((r) => r.type))
          return rows.filter((r) => r.type === 'watchChain').length >= 3 && types.has('deployMulticall3') ? rows : null
        },
        { timeoutMs: 60_000, what: 'failed chain jobs' },
      )
      expect(failed.length).toBeGreaterThanOrEqual(4)
      // The requests did reach the provider, with the key (the proxy saw them): only the outputs are clean.
      expect(proxy.calls.length).toBeGreaterThan(0)

      const rows = await sql`SELECT row_to_json(j)::text AS t FROM worker_jobs j`
      const dbText = rows.map((r) => r.t).join('\n')
      expect(dbText).toContain(`127.0.0.1:${port}`)
      const logText = server.logs.map((l) => JSON.stringify(l)).join('\n')
      expect(logText).toContain('job finished')
      const jobs = await gql(server.url, `{ jobs(limit: 100) { items { type result lastError } } }`)
      expect(jobs.errors).toBeUndefined()
      const gqlText = JSON.stringify(jobs.data)
      expect(gqlText).toContain('watchChain')
      const metrics = await (await fetch(`${server.url}/metrics`)).text()
      for (const s of SECRETS) {
        expect(dbText).not.toContain(s)
        expect(logText).not.toContain(s)
        expect(gqlText).not.toContain(s)
        expect(metrics).not.toContain(s)
      }
      // A 429 is not reported as "unreachable".
      const results = await sql`SELECT result->>'error' AS e FROM worker_jobs WHERE success = false AND result->>'error' LIKE '%429%'`
      for (const r of results) expect(r.e).not.toContain('unreachable')
    } finally {
      await server.stop()
    }
  })
})
