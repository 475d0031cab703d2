import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from 'bun:test'
import { MULTICALL3_ADDRESS } from '../../src/server/chain/multicall3'
import { type Anvil, freePort, startAnvil } from '../helpers/anvil'
import { actualNotificationKeys, expectedNotificationKeys, mineTransfers, setupTokenFixture, type TokenFixture } from '../helpers/chainFixture'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type RpcProxy, startRpcProxy } from '../helpers/rpcProxy'
import { type ServerProcess, startServerProcess } from '../helpers/server'
import { waitFor } from '../helpers/wait'
import { workersOf } from '../helpers/workers'

/**
 * Two chains in one real server (CHAINS): each has its own watchChain schedule, cursor and ledger rows,
 * its own Multicall3 deployment, and its notifications say which chain they come from. Chain B is reached
 * through two URLs, the first of which is dead, so every request of B goes through viem's fallback.
 */

setDefaultTimeout(180_000)

const A = 31337
const B = 31338

let anvilA: Anvil
let anvilB: Anvil
let db: TestDatabase
let fA: TokenFixture
let fB: TokenFixture
let proxyB: RpcProxy
let server: ServerProcess | undefined

beforeAll(async () => {
  ;[anvilA, anvilB, db] = await Promise.all([
    startAnvil({ args: ['--chain-id', String(A)] }),
    startAnvil({ args: ['--chain-id', String(B)] }),
    createTestDatabase('multi_chain'),
  ])
  fA = await setupTokenFixture(anvilA.client, db.url)
  fB = await setupTokenFixture(anvilB.client, db.url, 2, fA.users)
  proxyB = startRpcProxy(anvilB.url)
})

afterAll(async () => {
  await server?.stop('SIGKILL')
  await proxyB?.stop()
  await Promise.all([fA?.sql.end(), fB?.sql.end()])
  await Promise.all([anvilA?.stop(), anvilB?.stop()])
  await db?.drop()
})

/** Waits until a chain's notifications are exactly what the chain says for [start, end] (no more, no fewer, no duplicate). */
async function settled(f: TokenFixture, chainId: number, start: bigint, end: bigint, what: string): Promise<void> {
  const expected = await expectedNotificationKeys(f, start, end)
  expect(expected.length).toBeGreaterThan(0)
  let last: string[] = []
  await waitFor(
    async () => {
      last = await actualNotificationKeys(f, chainId)
      return last.length === expected.length && last.every((k, i) => k === expected[i])
    },
    { timeoutMs: 60_000, intervalMs: 100, what: `${what}: ${expected.length} notifications (have ${last.length})` },
  )
}

const metricValue = (text: string, series: string) => {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `))
  return line ? Number(line.slice(series.length + 1)) : undefined
}

describe('two chains in one server', () => {
  test('transfers on both give exactly-once notifications per chain, across a child SIGKILL mid-range and a reorg on one chain', async () => {
    const a1 = await mineTransfers(fA, 12, 100n)
    const b1 = await mineTransfers(fB, 12, 200n)
    // The first read of chain B waits in the proxy: the child is provably inside a range when it is killed.
    const held = proxyB.hold('eth_getLogs')
    const dead = `http://127.0.0.1:${await freePort()}`
    server = await startServerProcess({
      DATABASE_URL: db.url,
      CHAIN_RPC_URL: '',
      CHAIN_ID: '',
      CHAINS: JSON.stringify([
        { id: A, rpcUrls: [anvilA.url], startBlock: Number(a1.start) },
        { id: B, rpcUrls: [dead, proxyB.url], startBlock: Number(b1.start) },
      ]),
      CRON_WATCH_CHAIN: '* * * * * *',
      CHAIN_MAX_BLOCK_RANGE: '2',
      CHAIN_RPC_TIMEOUT_MS: '5000',
      DEPLOY_MULTICALL3_ON_BOOT: 'true',
      WORKER_COUNT: '1',
    })
    await Promise.race([
      held.arrived,
      new Promise((_, reject) =>
        setTimeout(() => reject(new Error(`no eth_getLogs reached chain B's proxy in 30 s; server said: ${JSON.stringify(server!.logs.slice(-25).map((l) => [l.msg, l.type, l.chainId, l.jobId, l.error ?? l.err?.message]))}`)), 30_000),
      ),
    ])
    const [child] = await workersOf(server)
    process.kill(child!.pid, 'SIGKILL')
    held.release()

    await settled(fA, A, a1.start, a1.end, 'chain A')
    await settled(fB, B, b1.start, b1.end, 'chain B')
    // The child really died and was replaced.
    await waitFor(async () => (await workersOf(server!))[0]!.restarts >= 1, { what: 'the killed child restarted' })

    // One schedule (its one unfinished row, pending or running) and one cursor per chain, and Multicall3 on both.
    const schedules = await fA.sql`
      SELECT tag, data FROM worker_jobs WHERE type = 'watchChain' AND finished IS NULL ORDER BY tag`
    expect(schedules.map((r) => [r.tag, r.data])).toEqual([
      [`system:watchChain:${A}`, { chainId: A }],
      [`system:watchChain:${B}`, { chainId: B }],
    ])
    expect((await fA.sql`SELECT chain_id FROM chain_cursors ORDER BY chain_id`).map((r) => r.chain_id)).toEqual([A, B])
    for (const anvil of [anvilA, anvilB]) {
      await waitFor(async () => ((await anvil.client.getCode({ address: MULTICALL3_ADDRESS })) ?? '0x').length > 2, { timeoutMs: 30_000, what: 'Multicall3 on both chains' })
    }

    // A reorg of 3 blocks on chain A only: its notifications follow the new chain, chain B's do not move.
    const snap = await anvilA.client.snapshot()
    const a2 = await mineTransfers(fA, 3, 300n)
    await settled(fA, A, a1.start, a2.end, 'chain A before the reorg')
    await anvilA.client.revert({ id: snap })
    const a3 = await mineTransfers(fA, 4, 400n)
    expect(a3.start).toBe(a2.start)
    await settled(fA, A, a1.start, a3.end, 'chain A after the reorg')
    expect(await actualNotificationKeys(fB, B)).toEqual(await expectedNotificationKeys(fB, b1.start, b1.end))

    // The fallback: chain B's first URL never answered, its second did, and /metrics says so.
    const deadLabel = `worker_chain_rpc_requests_total{chain_id="${B}",endpoint="${dead}",outcome="unreachable"}`
    const okLabel = `worker_chain_rpc_requests_total{chain_id="${B}",endpoint="${new URL(proxyB.url).origin}",outcome="ok"}`
    const metrics = await waitFor(
      async () => {
        const text = await (await fetch(`${server!.url}/metrics`)).text()
        return (metricValue(text, deadLabel) ?? 0) > 0 && (metricValue(text, okLabel) ?? 0) > 0 ? text : null
      },
      { timeoutMs: 15_000, what: 'RPC request counters of both endpoints of chain B' },
    )
    expect(metricValue(metrics, `worker_chain_rpc_settings{chain_id="${B}",setting="endpoints"}`)).toBe(2)
    expect(metricValue(metrics, `worker_chain_rpc_settings{chain_id="${B}",setting="timeout_seconds"}`)).toBe(5)
    expect(metricValue(metrics, `worker_chain_rpc_settings{chain_id="${A}",setting="retries"}`)).toBe(1)
    expect(metricValue(metrics, `worker_chain_halted{chain_id="${A}"}`)).toBe(0)
    expect(metricValue(metrics, `worker_chain_halted{chain_id="${B}"}`)).toBe(0)
    // No RPC URL beyond scheme://host:port anywhere in what the server printed.
    expect(JSON.stringify(server.logs)).not.toContain(`${proxyB.url}/`)
  })
})
