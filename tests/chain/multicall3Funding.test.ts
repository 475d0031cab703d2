import { afterAll, beforeAll, beforeEach, describe, expect, setDefaultTimeout, test } from 'bun:test'
import postgres from 'postgres'
import { type Address, type Hex, keccak256 } from 'viem'
import { deployMulticall3 } from '../../src/server/chain/deployMulticall3'
import {
  MULTICALL3_ADDRESS,
  MULTICALL3_DEPLOYER,
  MULTICALL3_DEPLOYER_FUNDING_WEI,
  MULTICALL3_RUNTIME_BYTECODE,
  MULTICALL3_SIGNED_DEPLOYMENT_TX,
} from '../../src/server/chain/multicall3'
import { createLogger } from '../../src/server/log'
import { type Anvil, startAnvil } from '../helpers/anvil'
import { createChainTestApp } from '../helpers/chainApp'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type RpcProxy, startRpcProxy } from '../helpers/rpcProxy'
import { waitFor } from '../helpers/wait'

setDefaultTimeout(120_000)

const log = createLogger({ level: 'silent' })
const GAS_PRICE = 100_000_000_000n

let anvil: Anvil
let db: TestDatabase
let sql: postgres.Sql
let fresh: Hex
const closers: { close?(): Promise<void>; stop?(): Promise<void> }[] = []

beforeAll(async () => {
  ;[anvil, db] = await Promise.all([startAnvil(), createTestDatabase('chain_funding')])
  sql = postgres(db.url, { max: 2, onnotice: () => {} })
  fresh = await anvil.client.snapshot()
})

afterAll(async () => {
  await sql?.end()
  for (const c of closers) await (c.close ?? c.stop)!.call(c)
  await anvil?.stop()
  await db?.drop()
})

beforeEach(async () => {
  await anvil.client.revert({ id: fresh })
  fresh = await anvil.client.snapshot()
  await anvil.client.setAutomine(true)
})

function app(url = anvil.url) {
  const a = createChainTestApp(db.url, url)
  closers.push(a)
  return a
}
function proxy(opts: Parameters<typeof startRpcProxy>[1] = {}): RpcProxy {
  const p = startRpcProxy(anvil.url, opts)
  closers.push(p)
  return p
}

/** Every transaction to the deployer in the chain, mined ones only. */
async function transfersToDeployer(): Promise<{ hash: Hex; value: bigint }[]> {
  const out: { hash: Hex; value: bigint }[] = []
  const headNumber = await anvil.client.getBlockNumber({ cacheTime: 0 })
  for (let n = 0n; n <= headNumber; n++) {
    const block = await anvil.client.getBlock({ blockNumber: n, includeTransactions: true })
    for (const t of block.transactions) if (t.to?.toLowerCase() === MULTICALL3_DEPLOYER.toLowerCase()) out.push({ hash: t.hash, value: t.value })
  }
  return out
}

async function expectDeployedOnceFundedOnce() {
  expect(await anvil.client.getCode({ address: MULTICALL3_ADDRESS })).toBe(MULTICALL3_RUNTIME_BYTECODE)
  const funding = await transfersToDeployer()
  expect(funding).toHaveLength(1)
  expect(funding[0]!.value).toBe(MULTICALL3_DEPLOYER_FUNDING_WEI)
  const receipt = await anvil.client.getTransactionReceipt({ hash: keccak256(MULTICALL3_SIGNED_DEPLOYMENT_TX) })
  expect(await anvil.client.getBalance({ address: MULTICALL3_DEPLOYER })).toBe(MULTICALL3_DEPLOYER_FUNDING_WEI - receipt.gasUsed * GAS_PRICE)
}

const sentRows = () => sql`SELECT nonce, tx_hash, value, max_fee_per_gas, settled_at FROM chain_sent_txs ORDER BY id`

describe('deployMulticall3 funds the deployer once', () => {
  test('automine off: the stuck funding is replaced (same nonce, higher fee), a restarted run waits for it; deployed once, 0.1 ETH funded in total', async () => {
    await sql`TRUNCATE chain_sent_txs, chain_sends, chain_nonces`
    await anvil.client.setAutomine(false)
    // Run 1: the funding is never mined in its time: it is replaced twice, then the run fails, leaving it in flight.
    await expect(deployMulticall3(app(), { log, receiptTimeoutMs: 300 })).rejects.toThrow(/is not mined after 3 attempts; it stays in flight/)
    const rows = await sentRows()
    expect(rows).toHaveLength(3)
    expect(new Set(rows.map((r) => r.nonce)).size).toBe(1)
    expect(rows.every((r) => r.value === MULTICALL3_DEPLOYER_FUNDING_WEI.toString() && r.settled_at === null)).toBe(true)
    const fees = rows.map((r) => BigInt(r.max_fee_per_gas))
    expect(fees[1]! > fees[0]! && fees[2]! > fees[1]!).toBe(true)
    // The mempool holds one transfer to the deployer: the replacements replaced it.
    const pool = (await anvil.client.getTxpoolContent()).pending
    const toDeployer = Object.values(pool).flatMap((byNonce) => Object.values(byNonce)).filter((t) => t.to?.toLowerCase() === MULTICALL3_DEPLOYER.toLowerCase())
    expect(toDeployer).toHaveLength(1)

    // Run 2, as after a restart (a new app): it finds the recorded transaction and waits; it sends no funding of its own.
    const p = proxy()
    const run2 = deployMulticall3(app(p.url), { log, receiptTimeoutMs: 30_000 })
    await waitFor(() => p.calls.some((c) => c.method === 'eth_getTransactionReceipt'), { timeoutMs: 10_000, what: 'run 2 to wait for the funding' })
    await anvil.client.mine({ blocks: 1 })
    await anvil.client.setAutomine(true)
    const res = await run2
    expect(res).toMatchObject({ action: 'deployed', fundedWei: MULTICALL3_DEPLOYER_FUNDING_WEI.toString() })
    const sent = p.calls.filter((c) => c.method === 'eth_sendRawTransaction').map((c) => c.params[0])
    expect(sent).toEqual([MULTICALL3_SIGNED_DEPLOYMENT_TX])
    expect((await sentRows()).every((r) => r.settled_at !== null)).toBe(true)
    await expectDeployedOnceFundedOnce()
  })

  test('the node drops the funding transaction: it is broadcast again from the record, not sent anew', async () => {
    await sql`TRUNCATE chain_sent_txs, chain_sends, chain_nonces`
    let dropped = 0
    const p = proxy({
      answer: (call) => {
        const raw = call.params?.[0] as Hex | undefined
        if (call.method === 'eth_sendRawTransaction' && raw !== MULTICALL3_SIGNED_DEPLOYMENT_TX && dropped === 0) {
          dropped++
          // Accepted, as a load balancer in front of a node that then loses it would answer.
          return { result: keccak256(raw!) }
        }
        return undefined
      },
    })
    const res = await deployMulticall3(app(p.url), { log, receiptTimeoutMs: 300 })
    expect(res).toMatchObject({ action: 'deployed', fundedWei: MULTICALL3_DEPLOYER_FUNDING_WEI.toString() })
    expect(dropped).toBe(1)
    const rows = await sentRows()
    expect(rows).toHaveLength(1)
    await expectDeployedOnceFundedOnce()
  })

  test('a funding already pending in the mempool (not ours) is counted: nothing more is sent', async () => {
    await sql`TRUNCATE chain_sent_txs, chain_sends, chain_nonces`
    await anvil.client.setAutomine(false)
    const [, other] = await anvil.client.getAddresses()
    await anvil.client.sendTransaction({ account: other as Address, to: MULTICALL3_DEPLOYER, value: MULTICALL3_DEPLOYER_FUNDING_WEI, chain: null })
    const p = proxy()
    const run = deployMulticall3(app(p.url), { log, receiptTimeoutMs: 30_000 })
    await waitFor(() => p.calls.filter((c) => c.method === 'eth_getBalance').length >= 3, { timeoutMs: 10_000, what: 'the run to wait for the pending balance' })
    await anvil.client.mine({ blocks: 1 })
    await anvil.client.setAutomine(true)
    expect(await run).toMatchObject({ action: 'deployed', fundedWei: '0' })
    expect(await sentRows()).toHaveLength(0)
    await expectDeployedOnceFundedOnce()
  })
})
