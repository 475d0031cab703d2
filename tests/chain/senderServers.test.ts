import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from 'bun:test'
import postgres from 'postgres'
import { privateKeyToAccount } from 'viem/accounts'
import { ANVIL_KEYS, type Anvil, startAnvil } from '../helpers/anvil'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type RpcProxy, startRpcProxy } from '../helpers/rpcProxy'
import { type ServerProcess, startServerProcess } from '../helpers/server'
import { waitFor } from '../helpers/wait'

setDefaultTimeout(180_000)

const ENTRY = new URL('../fixtures/senderServer.ts', import.meta.url).pathname
const KEY = ANVIL_KEYS[4]
const wallet = privateKeyToAccount(KEY).address
const TO = '0x000000000000000000000000000000000000bEEF'

let anvil: Anvil
let db: TestDatabase
let sql: postgres.Sql
let proxy: RpcProxy
const servers: ServerProcess[] = []

beforeAll(async () => {
  ;[anvil, db] = await Promise.all([startAnvil(), createTestDatabase('chain_sender_servers')])
  sql = postgres(db.url, { max: 2, onnotice: () => {} })
  proxy = startRpcProxy(anvil.url)
})

afterAll(async () => {
  for (const s of servers) await s.stop('SIGKILL')
  await sql?.end()
  await proxy?.stop()
  await anvil?.stop()
  await db?.drop()
})

describe('sending jobs on two servers', () => {
  test('jobs of one wallet on two servers: serialised by the wallet concurrencyKey, every nonce used once, no "nonce too low"', async () => {
    const env = { DATABASE_URL: db.url, CHAIN_RPC_URL: proxy.url, SERVER_WALLET_PRIVATE_KEY: KEY, WORKER_COUNT: '2' }
    servers.push(...(await Promise.all([startServerProcess(env, { entry: ENTRY }), startServerProcess(env, { entry: ENTRY })])))
    const JOBS = 8
    const STEPS = 5
    for (let i = 0; i < JOBS; i++) {
      await sql`INSERT INTO worker_jobs (type, user_id, data, concurrency_key) VALUES ('sendTransfers', 0, ${sql.json({ to: TO, steps: STEPS })}, 'wallet:server')`
    }
    const rows = await waitFor(
      async () => {
        const r = await sql`SELECT id, success, result, last_error, started, finished, locked_by FROM worker_jobs WHERE type = 'sendTransfers' ORDER BY started`
        return r.length === JOBS && r.every((x) => x.finished !== null) ? r : null
      },
      { timeoutMs: 120_000, what: 'the sending jobs to finish' },
    )
    expect(rows.map((r) => [r.success, r.last_error])).toEqual(Array(JOBS).fill([true, null]))
    const nonces = rows.flatMap((r) => r.result.nonces as number[]).sort((a, b) => a - b)
    expect(nonces).toEqual(Array.from({ length: JOBS * STEPS }, (_, i) => i))
    // One at a time per wallet, across both servers: no two runs overlap.
    for (let i = 1; i < rows.length; i++) expect(rows[i]!.started.getTime()).toBeGreaterThanOrEqual(rows[i - 1]!.finished.getTime())
    expect(await anvil.client.getTransactionCount({ address: wallet, blockTag: 'latest' })).toBe(JOBS * STEPS)
    expect(proxy.calls.filter((c) => /nonce too low/i.test(c.error ?? ''))).toEqual([])
  })
})
