import { afterAll, beforeAll, beforeEach, describe, expect, setDefaultTimeout, test } from 'bun:test'
import postgres from 'postgres'
import { type Address, type Hex, keccak256, parseEther } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { createChainClients } from '../../src/server/chain/clients'
import { pruneSettledSends, type SenderDeps, SendPendingError, SendSupersededError, sendOnce } from '../../src/server/chain/sender'
import { createDb, type DbHandle } from '../../src/server/db/client'
import { createLogger } from '../../src/server/log'
import { ANVIL_KEYS, type Anvil, startAnvil } from '../helpers/anvil'
import { chainTestConfig } from '../helpers/chainApp'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type RpcProxy, startRpcProxy } from '../helpers/rpcProxy'

setDefaultTimeout(120_000)

const log = createLogger({ level: 'silent' })
const KEY = ANVIL_KEYS[3]
const wallet = privateKeyToAccount(KEY).address
const TO = '0x000000000000000000000000000000000000dEaD' as Address

let anvil: Anvil
let db: TestDatabase
let sql: postgres.Sql
let handle: DbHandle
let fresh: Hex
const closers: RpcProxy[] = []

beforeAll(async () => {
  ;[anvil, db] = await Promise.all([startAnvil(), createTestDatabase('chain_sender')])
  sql = postgres(db.url, { max: 2, onnotice: () => {} })
  handle = createDb(db.url, { max: 4 })
  fresh = await anvil.client.snapshot()
})

afterAll(async () => {
  await sql?.end()
  await handle?.close()
  for (const c of closers) await c.stop()
  await anvil?.stop()
  await db?.drop()
})

beforeEach(async () => {
  await anvil.client.revert({ id: fresh })
  fresh = await anvil.client.snapshot()
  await anvil.client.setAutomine(true)
  await sql`TRUNCATE chain_sends, chain_sent_txs, chain_nonces`
})

function deps(rpcUrl = anvil.url, extra: Partial<SenderDeps> = {}): SenderDeps {
  const config = chainTestConfig(db.url, rpcUrl, { SERVER_WALLET_PRIVATE_KEY: KEY })
  const clients = createChainClients(config, config.chains[0]!)
  return { db: handle.db, clients, chainId: 31337, log, pollMs: 20, ...extra }
}
function proxy(opts: Parameters<typeof startRpcProxy>[1] = {}) {
  const p = startRpcProxy(anvil.url, opts)
  closers.push(p)
  return p
}
const attempts = () => sql`SELECT nonce, tx_hash, max_fee_per_gas, filler FROM chain_sent_txs ORDER BY id`
const poolFromWallet = async () =>
  Object.values((await anvil.client.getTxpoolContent()).pending[wallet] ?? (await anvil.client.getTxpoolContent()).pending[wallet.toLowerCase() as Address] ?? {})
async function minedFromWallet() {
  const out: { nonce: number; to: string | null; value: bigint; hash: Hex }[] = []
  const head = await anvil.client.getBlockNumber({ cacheTime: 0 })
  for (let n = 0n; n <= head; n++) {
    const b = await anvil.client.getBlock({ blockNumber: n, includeTransactions: true })
    for (const t of b.transactions) if (t.from.toLowerCase() === wallet.toLowerCase()) out.push({ nonce: t.nonce, to: t.to, value: t.value, hash: t.hash })
  }
  return out
}

describe('sendOnce', () => {
  test('a rerun of the same step returns the recorded receipt and signs nothing', async () => {
    const p = proxy()
    const a = await sendOnce(deps(p.url), { key: 'k1', step: 'pay', to: TO, value: 7n })
    const b = await sendOnce(deps(p.url), { key: 'k1', step: 'pay', to: TO, value: 7n })
    expect(b).toEqual(a)
    expect(p.calls.filter((c) => c.method === 'eth_sendRawTransaction')).toHaveLength(1)
    expect(await minedFromWallet()).toEqual([{ nonce: 0, to: TO.toLowerCase(), value: 7n, hash: a.txHash }])
  })

  test('a broadcast whose reply is lost is not sent again with other bytes', async () => {
    let dropped = 0
    const p = proxy({ dropReply: (c) => c.method === 'eth_sendRawTransaction' && dropped++ === 0 })
    const res = await sendOnce(deps(p.url), { key: 'lost-reply', step: 'pay', to: TO, value: 9n })
    expect(dropped).toBeGreaterThanOrEqual(1)
    const raws = new Set(p.calls.filter((c) => c.method === 'eth_sendRawTransaction').map((c) => c.params[0] as Hex))
    expect(raws.size).toBe(1)
    expect(keccak256([...raws][0]!)).toBe(res.txHash)
    expect(await attempts()).toHaveLength(1)
    expect(await minedFromWallet()).toEqual([{ nonce: 0, to: TO.toLowerCase(), value: 9n, hash: res.txHash }])
  })

  test('a stuck transaction is replaced with the same nonce and a higher fee, not duplicated; the rerun returns the replacement', async () => {
    await anvil.client.setAutomine(false)
    await expect(sendOnce(deps(anvil.url, { attemptTimeoutMs: 200, maxReplacements: 1 }), { key: 'stuck', step: 'pay', to: TO, value: 5n })).rejects.toBeInstanceOf(SendPendingError)
    const rows = await attempts()
    expect(rows).toHaveLength(2)
    expect(rows[0]!.nonce).toBe(rows[1]!.nonce)
    expect(BigInt(rows[1]!.max_fee_per_gas) > BigInt(rows[0]!.max_fee_per_gas)).toBe(true)
    const pool = await poolFromWallet()
    expect(pool.map((t) => t.hash)).toEqual([rows[1]!.tx_hash])
    await anvil.client.mine({ blocks: 1 })
    const res = await sendOnce(deps(), { key: 'stuck', step: 'pay', to: TO, value: 5n })
    expect(res).toMatchObject({ txHash: rows[1]!.tx_hash, nonce: 0, status: 'success', attempts: 2 })
    expect((await minedFromWallet()).map((t) => t.hash)).toEqual([rows[1]!.tx_hash])
  })

  test('a transaction whose fee became too low (the base fee rose after it was signed) is replaced with a higher fee, automine on', async () => {
    // Signed and recorded at the node's current fees; then the base fee jumps far above them before the
    // broadcast, so the node keeps the transaction pending, unmined, as a live chain does.
    // 30 % above the signed max fee: the first +25 % replacement is still too low, the second is not.
    const raise = async (phase: string) => {
      if (phase !== 'recorded') return
      const [first] = await attempts()
      const baseFee = (BigInt(first!.max_fee_per_gas) * 13n) / 10n
      await setNextBaseFee(baseFee)
    }
    const before = (await anvil.client.getBlock()).baseFeePerGas!
    const setNextBaseFee = (fee: bigint) => anvil.client.request({ method: 'anvil_setNextBlockBaseFeePerGas' as never, params: [`0x${fee.toString(16)}`] as never })
    // The node keeps a set next-block base fee across the snapshot revert of beforeEach: put it back after.
    const res = await sendOnce(deps(anvil.url, { attemptTimeoutMs: 500, maxReplacements: 3, onPhase: raise }), { key: 'lowfee', step: 'pay', to: TO, value: 7n }).finally(() =>
      setNextBaseFee(before),
    )
    const rows = await attempts()
    expect(rows.length).toBeGreaterThanOrEqual(2)
    expect(new Set(rows.map((r) => r.nonce))).toEqual(new Set([0]))
    expect(BigInt(rows.at(-1)!.max_fee_per_gas) > BigInt(rows[0]!.max_fee_per_gas)).toBe(true)
    // One transfer of 7 reached the chain: the replacement; the underpriced first attempt never did.
    const mined = await minedFromWallet()
    expect(mined.map((t) => [t.nonce, t.value])).toEqual([[0, 7n]])
    expect(res.txHash).toBe(mined[0]!.hash)
    expect(res.txHash).not.toBe(rows[0]!.tx_hash)
  })

  test('a nonce recorded but never broadcast is filled by the next send: the same bytes, then nothing blocks', async () => {
    const crash = new Error('crash after the record')
    await expect(
      sendOnce(deps(anvil.url, { onPhase: (ph) => { if (ph === 'recorded') throw crash } }), { key: 'orphan', step: 'pay', to: TO, value: 1n }),
    ).rejects.toBe(crash)
    expect(await minedFromWallet()).toEqual([])
    const [orphan] = await attempts()
    const next = await sendOnce(deps(anvil.url, { gapGraceMs: 0 }), { key: 'next', step: 'pay', to: TO, value: 2n })
    expect(next.nonce).toBe(1)
    const mined = await minedFromWallet()
    expect(mined.map((t) => [t.nonce, t.value, t.hash])).toEqual([
      [0, 1n, orphan!.tx_hash],
      [1, 2n, next.txHash],
    ])
    // The orphan's own rerun then returns its receipt.
    expect(await sendOnce(deps(), { key: 'orphan', step: 'pay', to: TO, value: 1n })).toMatchObject({ txHash: orphan!.tx_hash, nonce: 0 })
  })

  test('a recorded transaction the node refuses is filled with a zero-value self-transfer; its step then fails as superseded', async () => {
    // More than the wallet holds: recorded, then refused at every broadcast.
    const huge = parseEther('100000000')
    await expect(
      sendOnce(deps(anvil.url, { attemptTimeoutMs: 100, maxReplacements: 0 }), { key: 'broke', step: 'pay', to: TO, value: huge, gas: 21_000n }),
    ).rejects.toBeInstanceOf(SendPendingError)
    const next = await sendOnce(deps(anvil.url, { gapGraceMs: 0 }), { key: 'after', step: 'pay', to: TO, value: 3n })
    expect(next.nonce).toBe(1)
    const mined = await minedFromWallet()
    expect(mined.map((t) => [t.nonce, t.to, t.value])).toEqual([
      [0, wallet.toLowerCase(), 0n],
      [1, TO.toLowerCase(), 3n],
    ])
    expect((await attempts()).map((r) => r.filler)).toEqual([false, true, false])
    await expect(sendOnce(deps(), { key: 'broke', step: 'pay', to: TO, value: huge, gas: 21_000n })).rejects.toBeInstanceOf(SendSupersededError)
    const [row] = await sql`SELECT state FROM chain_sends WHERE send_key = 'broke'`
    expect(row!.state).toBe('superseded')
  })

  test('a reset chain (reverted under a database that remembers its sends): the counter follows it back, nothing waits on a gap', async () => {
    const snap = await anvil.client.snapshot()
    const first = await sendOnce(deps(), { key: 'before-reset', step: 'pay', to: TO, value: 1n })
    expect(first.nonce).toBe(0)
    await anvil.client.revert({ id: snap })
    const again = await sendOnce(deps(anvil.url, { attemptTimeoutMs: 5_000 }), { key: 'after-reset', step: 'pay', to: TO, value: 2n })
    expect(again.nonce).toBe(0)
    expect((await minedFromWallet()).map((t) => [t.nonce, t.value])).toEqual([[0, 2n]])
    expect((await sql`SELECT send_key FROM chain_sends ORDER BY id`).map((r) => r.send_key)).toEqual(['after-reset'])
  })

  test('a nonce taken from outside the server is detected: the step is sent once, with a new nonce', async () => {
    await anvil.client.setAutomine(false)
    const send = sendOnce(deps(anvil.url, { attemptTimeoutMs: 30_000 }), { key: 'taken', step: 'pay', to: TO, value: 4n, gas: 21_000n })
    // The node's pool gets our transaction; then something else takes nonce 0 with a higher fee.
    const deadline = Date.now() + 10_000
    while ((await poolFromWallet()).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    const ours = (await poolFromWallet())[0]!
    await anvil.client.dropTransaction({ hash: ours.hash })
    await anvil.client.sendTransaction({ account: wallet, to: wallet, value: 0n, nonce: 0, chain: null })
    await anvil.client.mine({ blocks: 1 })
    await anvil.client.setAutomine(true)
    const res = await send
    expect(res.nonce).toBe(1)
    const mined = await minedFromWallet()
    expect(mined.filter((t) => t.to === TO.toLowerCase()).map((t) => [t.nonce, t.value])).toEqual([[1, 4n]])
  })

  test('the daily prune deletes settled sends of finished or gone jobs a week old, never a pending one or one of a job that may still run', async () => {
    const [running] = await sql`INSERT INTO worker_jobs (type, user_id, data, started) VALUES ('sleep', 0, '{}', now()) RETURNING id`
    const [done] = await sql`INSERT INTO worker_jobs (type, user_id, data, started, finished, success) VALUES ('sleep', 0, '{}', now(), now(), true) RETURNING id`
    const send = (key: string, jobId?: number) => sendOnce(deps(), { key, jobId, step: key, to: TO, value: 1n, gas: 21_000n })
    await send('of-running', running!.id)
    await send('of-finished', done!.id)
    await send('no-job')
    await send('recent', done!.id)
    await send('pending', done!.id)
    await send('of-gone-job', 999_999)
    await sql`UPDATE chain_sends SET settled_at = now() - interval '8 days' WHERE send_key <> 'recent'`
    // A pending record, however old, is never deleted (here made by hand from a mined one).
    await sql`UPDATE chain_sends SET state = 'pending', settled_at = NULL, created_at = now() - interval '30 days' WHERE send_key = 'pending'`
    // An attempt left without a send (as the funding rows written before the sender), as old.
    await sql`UPDATE chain_sent_txs SET send_id = NULL, settled_at = now() - interval '8 days' WHERE send_id = (SELECT id FROM chain_sends WHERE send_key = 'no-job')`
    const attemptsBefore = (await sql`SELECT count(*)::int AS n FROM chain_sent_txs`)[0]!.n

    expect(await pruneSettledSends(handle.db, { batchSize: 1 })).toBe(3)
    expect((await sql`SELECT send_key FROM chain_sends ORDER BY nonce`).map((r) => r.send_key)).toEqual(['of-running', 'recent', 'pending'])
    // Their attempts went with them (cascade), and so did the orphan attempt.
    expect((await sql`SELECT count(*)::int AS n FROM chain_sent_txs`)[0]!.n).toBe(attemptsBefore - 3)
    expect((await sql`SELECT count(*)::int AS n FROM chain_sent_txs WHERE send_id IS NULL`)[0]!.n).toBe(0)
    // The wallet's counter is untouched: the next send takes the next nonce, not a freed one.
    expect((await send('after-prune')).nonce).toBe(6)
    expect(await pruneSettledSends(handle.db)).toBe(0)
  })
})
