import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, setDefaultTimeout, test } from 'bun:test'
import pino from 'pino'
import type { Hex } from 'viem'
import { type WatchChainResult, watchChain } from '../../src/server/chain/watcher'
import { createLogger } from '../../src/server/log'
import { type Anvil, freePort, startAnvil } from '../helpers/anvil'
import { createChainTestApp } from '../helpers/chainApp'
import {
  actualNotificationKeys,
  batchTransfer,
  expectedNotificationKeys,
  notificationCounts,
  resetWatchState,
  setupTokenFixture,
  type TokenFixture,
  transfer,
} from '../helpers/chainFixture'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type RpcProxy, startRpcProxy } from '../helpers/rpcProxy'

setDefaultTimeout(60_000)

const log = createLogger({ level: 'silent' })

/** A logger that keeps the lines at error level and above (the halting run must log one, and later runs none). */
const capturingLog = (into: string[]) => pino({ level: 'error' }, { write: (line: string) => void into.push(line) })

let anvil: Anvil
let db: TestDatabase
let f: TokenFixture
let apps: ReturnType<typeof createChainTestApp>[] = []
let proxies: RpcProxy[] = []

beforeAll(async () => {
  ;[anvil, db] = await Promise.all([startAnvil(), createTestDatabase('chain_watch')])
  f = await setupTokenFixture(anvil.client, db.url)
})

afterAll(async () => {
  await f?.sql.end()
  await anvil?.stop()
  await db?.drop()
})

beforeEach(async () => {
  await resetWatchState(f)
})

afterEach(async () => {
  await Promise.all(apps.map((a) => a.close()))
  await Promise.all(proxies.map((p) => p.stop()))
  apps = []
  proxies = []
})

function app(env: Record<string, string> = {}, url = anvil.url) {
  const a = createChainTestApp(db.url, url, env)
  apps.push(a)
  return a
}

function proxy() {
  const p = startRpcProxy(anvil.url)
  proxies.push(p)
  return p
}

async function run(a: ReturnType<typeof app>): Promise<WatchChainResult> {
  const res = await watchChain(a, { log })
  if ('skipped' in res) throw new Error('unexpectedly skipped')
  return res
}

const head = () => anvil.client.getBlockNumber({ cacheTime: 0 })
const [u1, u2] = [0, 1]
const user = (i: number) => f.users[i]!

/** The [from, to] block ranges the proxy saw eth_getLogs for, in order (a range's calls, one per filter, count once). */
const getLogsRanges = (p: RpcProxy) =>
  p.calls
    .filter((c) => c.method === 'eth_getLogs')
    .map((c) => {
      const { fromBlock, toBlock } = c.params[0] as { fromBlock: Hex; toBlock: Hex }
      return [Number(BigInt(fromBlock)), Number(BigInt(toBlock))]
    })
    .filter((r, i, all) => i === 0 || r[0] !== all[i - 1]![0] || r[1] !== all[i - 1]![1])

describe('watchChain: ERC-20 transfers become notifications', () => {
  test('N transfers give exactly N notifications per involved user, with the documented fields', async () => {
    const start = (await head()) + 1n
    await transfer(f, user(u1).address, user(u2).address, 11n) // u1, u2
    await transfer(f, user(u1).address, f.stranger, 12n) // u1
    await transfer(f, f.stranger, user(u2).address, 13n) // u2
    await transfer(f, user(u2).address, user(u2).address, 14n) // u2 once (self-transfer)
    await batchTransfer(f, user(u1).address, [user(u2).address, f.stranger, user(u2).address], [15n, 16n, 17n]) // u1 ×3, u2 ×2
    await transfer(f, f.stranger, f.minter, 18n) // nobody
    // An ERC-721 Transfer to a user has the same topic but is not an ERC-20 transfer.
    await anvil.client.waitForTransactionReceipt({
      hash: await anvil.client.writeContract({
        address: f.nft,
        abi: [{ type: 'function', name: 'mint', inputs: [{ type: 'address' }, { type: 'uint256' }], outputs: [], stateMutability: 'nonpayable' }],
        functionName: 'mint',
        args: [user(u1).address, 7n],
        account: f.minter,
        chain: null,
      }),
    })
    const end = await head()

    const res = await run(app({ CHAIN_START_BLOCK: String(start), CHAIN_MAX_BLOCK_RANGE: '3' }))
    // 7 logs fetched: getLogs asks only for transfers from or to a user, so stranger → minter is never read
    // (the NFT transfer to a user matches the filter too, and strict decoding leaves it out).
    expect(res).toMatchObject({ fromBlock: String(start), toBlock: String(end), events: 7, reorgDepth: 0, caughtUp: true })
    expect(await notificationCounts(f)).toEqual({ [user(u1).id]: 5, [user(u2).id]: 5 })
    expect(await actualNotificationKeys(f)).toEqual(await expectedNotificationKeys(f, start, end))

    const [row] = await f.sql`SELECT n.*, e.tx_hash FROM notifications n JOIN chain_events e ON e.id = n.chain_event_id ORDER BY n.id LIMIT 1`
    expect(row!.read).toBe(false)
    expect(row!.created_at).toBeInstanceOf(Date)
    expect(row!.data).toEqual({
      type: 'token_transfer',
      chainId: 31337,
      token: f.token.toLowerCase(),
      from: user(u1).address.toLowerCase(),
      to: user(u2).address.toLowerCase(),
      value: '11',
      txHash: row!.tx_hash,
    })
    // The ledger holds the ERC-20 transfers that notified someone: 7 logs (not the stranger → minter one),
    // none from the NFT contract.
    const [ledger] = await f.sql`SELECT count(*)::int AS n, count(*) FILTER (WHERE address = ${f.nft.toLowerCase()})::int AS nft FROM chain_events`
    expect(ledger).toEqual({ n: 7, nft: 0 })

    // Nothing new: a second run reads nothing and writes nothing.
    const again = await run(app({ CHAIN_START_BLOCK: String(start) }))
    expect(again).toMatchObject({ fromBlock: null, toBlock: null, events: 0, ranges: 0, caughtUp: true })
    expect(await notificationCounts(f)).toEqual({ [user(u1).id]: 5, [user(u2).id]: 5 })
  })

  test('the job result is JSON-safe (block numbers as decimal strings)', async () => {
    const start = (await head()) + 1n
    await transfer(f, user(u1).address, user(u2).address, 1n)
    const res = await run(app({ CHAIN_START_BLOCK: String(start) }))
    expect(JSON.parse(JSON.stringify(res))).toEqual({ ...res })
    expect(typeof res.fromBlock).toBe('string')
  })

  test('a value above 2^53 is stored exactly, as a decimal string', async () => {
    const start = (await head()) + 1n
    const big = 123_456_789_012_345_678_901_234_567_890n
    await anvil.client.waitForTransactionReceipt({
      hash: await anvil.client.writeContract({ address: f.token, abi: f.abi, functionName: 'mint', args: [user(u1).address, big], account: f.minter, chain: null }),
    })
    await run(app({ CHAIN_START_BLOCK: String(start) }))
    const [row] = await f.sql`SELECT data FROM notifications`
    expect(row!.data.value).toBe(big.toString())
    expect(row!.data.from).toBe('0x0000000000000000000000000000000000000000')
  })
})

describe('watchChain: ranges', () => {
  test('ranges of 1 block: every block read once, in order, none skipped', async () => {
    const start = (await head()) + 1n
    for (let i = 0; i < 5; i++) await transfer(f, user(u1).address, f.stranger, BigInt(i + 1))
    const end = await head()
    const p = proxy()
    const res = await run(app({ CHAIN_START_BLOCK: String(start), CHAIN_MAX_BLOCK_RANGE: '1' }, p.url))
    expect(res).toMatchObject({ fromBlock: String(start), toBlock: String(end), events: 5, ranges: 5 })
    const s = Number(start)
    expect(getLogsRanges(p)).toEqual([0, 1, 2, 3, 4].map((i) => [s + i, s + i]))
    expect(await notificationCounts(f)).toEqual({ [user(u1).id]: 5 })
  })

  test('ranges of exactly CHAIN_MAX_BLOCK_RANGE blocks: contiguous, never overlapping, across runs', async () => {
    const start = (await head()) + 1n
    const s = Number(start)
    for (let i = 0; i < 8; i++) await transfer(f, user(u1).address, f.stranger, 1n)
    const p = proxy()
    const a = app({ CHAIN_START_BLOCK: String(start), CHAIN_MAX_BLOCK_RANGE: '4' }, p.url)
    expect(await run(a)).toMatchObject({ fromBlock: String(s), toBlock: String(s + 7), events: 8, ranges: 2 })
    expect(getLogsRanges(p)).toEqual([
      [s, s + 3],
      [s + 4, s + 7],
    ])
    await transfer(f, user(u1).address, f.stranger, 1n)
    expect(await run(a)).toMatchObject({ fromBlock: String(s + 8), toBlock: String(s + 8), events: 1, ranges: 1 })
    for (let i = 0; i < 5; i++) await transfer(f, user(u1).address, f.stranger, 1n)
    expect(await run(a)).toMatchObject({ fromBlock: String(s + 9), toBlock: String(s + 13), events: 5, ranges: 2 })
    expect(getLogsRanges(p)).toEqual([
      [s, s + 3],
      [s + 4, s + 7],
      [s + 8, s + 8],
      [s + 9, s + 12],
      [s + 13, s + 13],
    ])
    // Every block had one transfer: 14 blocks, 14 ledger rows, one per block.
    const blocks = await f.sql`SELECT block_number FROM chain_events ORDER BY block_number`
    expect(blocks.map((r) => Number(r.block_number))).toEqual(Array.from({ length: 14 }, (_, i) => s + i))
    expect(await notificationCounts(f)).toEqual({ [user(u1).id]: 14 })
  })

  test('CHAIN_CONFIRMATIONS keeps that many blocks behind the head', async () => {
    const start = (await head()) + 1n
    for (let i = 0; i < 5; i++) await transfer(f, user(u2).address, f.stranger, 1n)
    const end = await head()
    const a = app({ CHAIN_START_BLOCK: String(start), CHAIN_CONFIRMATIONS: '2' })
    expect(await run(a)).toMatchObject({ toBlock: String(end - 2n), events: 3 })
    expect(await notificationCounts(f)).toEqual({ [user(u2).id]: 3 })
    // The lag /metrics shows (worker_chain_lag_blocks): head − cursor, so a caught-up cursor reads the depth.
    const chainId = String(await anvil.client.getChainId())
    expect(a.metrics.take()?.chainLag).toEqual({ [chainId]: 2 })
    await anvil.client.mine({ blocks: 2 })
    expect(await run(a)).toMatchObject({ fromBlock: String(end - 1n), toBlock: String(end), events: 2 })
    expect(await notificationCounts(f)).toEqual({ [user(u2).id]: 5 })
    expect(a.metrics.take()?.chainLag).toEqual({ [chainId]: 2 })
  })

  test('CHAIN_START_BLOCK=0 reads from genesis', async () => {
    const end = await head()
    const res = await run(app({ CHAIN_START_BLOCK: '0', CHAIN_MAX_BLOCK_RANGE: '7' }))
    expect(res).toMatchObject({ fromBlock: '0', toBlock: String(end), reorgDepth: 0 })
    const expected = await expectedNotificationKeys(f, 0n, end)
    expect(expected.length).toBeGreaterThan(3)
    expect(await actualNotificationKeys(f)).toEqual(expected)
  })

  test('without CHAIN_START_BLOCK the first run starts at the current safe head', async () => {
    await transfer(f, user(u1).address, user(u2).address, 1n) // before the start: never notified
    await transfer(f, user(u2).address, f.stranger, 2n) // the safe head (confirmations 1)
    await anvil.client.mine({ blocks: 1 })
    const h = await head()
    const res = await run(app({ CHAIN_CONFIRMATIONS: '1' }))
    expect(res).toMatchObject({ fromBlock: String(h - 1n), toBlock: String(h - 1n), events: 1 })
    expect(await notificationCounts(f)).toEqual({ [user(u2).id]: 1 })
  })
})

describe('watchChain: reorgs', () => {
  test('a reorg of every processed block: notifications follow the canonical chain', async () => {
    const start = (await head()) + 1n
    const snap = await anvil.client.snapshot()
    for (let i = 1; i <= 4; i++) await transfer(f, user(u1).address, user(u2).address, BigInt(i))
    const a = app({ CHAIN_START_BLOCK: String(start), CHAIN_MAX_BLOCK_RANGE: '2' })
    expect(await run(a)).toMatchObject({ events: 4, reorgDepth: 0 })
    expect(await notificationCounts(f)).toEqual({ [user(u1).id]: 4, [user(u2).id]: 4 })
    const orphaned = await actualNotificationKeys(f)

    await anvil.client.revert({ id: snap })
    for (let i = 1; i <= 6; i++) await transfer(f, user(u2).address, f.stranger, BigInt(100 + i))
    const end = await head()
    const res = await run(a)
    // The cursor was at start+3; the last block that still agrees is start-1, the cursor's starting point.
    expect(res).toMatchObject({ reorgDepth: 4, fromBlock: String(start), toBlock: String(end), events: 6 })
    expect(await notificationCounts(f)).toEqual({ [user(u2).id]: 6 })
    const now = await actualNotificationKeys(f)
    expect(now).toEqual(await expectedNotificationKeys(f, start, end))
    expect(now.filter((k) => orphaned.includes(k))).toEqual([])
    await expectLedgerCanonical()
  })

  test('a shallow reorg keeps the notifications of the blocks below it untouched', async () => {
    const start = (await head()) + 1n
    await transfer(f, user(u1).address, user(u2).address, 1n)
    await transfer(f, user(u1).address, user(u2).address, 2n)
    const snap = await anvil.client.snapshot()
    await transfer(f, user(u1).address, f.stranger, 3n)
    await transfer(f, user(u1).address, f.stranger, 4n)
    const a = app({ CHAIN_START_BLOCK: String(start) })
    expect(await run(a)).toMatchObject({ events: 4 })
    const kept = await f.sql`SELECT id, data FROM notifications WHERE (data->>'value')::int <= 2 ORDER BY id`
    expect(kept).toHaveLength(4)

    await anvil.client.revert({ id: snap })
    await transfer(f, f.stranger, user(u2).address, 30n)
    await transfer(f, f.stranger, user(u2).address, 40n)
    await transfer(f, f.stranger, user(u2).address, 50n)
    const end = await head()
    expect(await run(a)).toMatchObject({ reorgDepth: 2, fromBlock: String(start + 2n), toBlock: String(end), events: 3 })
    expect(await f.sql`SELECT id, data FROM notifications WHERE (data->>'value')::int <= 2 ORDER BY id`).toEqual(kept)
    expect(await actualNotificationKeys(f)).toEqual(await expectedNotificationKeys(f, start, end))
    expect(await notificationCounts(f)).toEqual({ [user(u1).id]: 2, [user(u2).id]: 5 })
    await expectLedgerCanonical()
  })

  test('a reorg with the same number of blocks (the cursor height exists, with another hash)', async () => {
    const start = (await head()) + 1n
    const snap = await anvil.client.snapshot()
    await transfer(f, user(u1).address, f.stranger, 5n)
    await transfer(f, user(u1).address, f.stranger, 6n)
    const a = app({ CHAIN_START_BLOCK: String(start) })
    await run(a)
    await anvil.client.revert({ id: snap })
    await transfer(f, user(u2).address, f.stranger, 7n)
    await anvil.client.mine({ blocks: 1 })
    const end = await head()
    expect(end).toBe(start + 1n)
    expect(await run(a)).toMatchObject({ reorgDepth: 2, events: 1 })
    expect(await actualNotificationKeys(f)).toEqual(await expectedNotificationKeys(f, start, end))
    expect(await notificationCounts(f)).toEqual({ [user(u2).id]: 1 })
  })

  test('a reorg deeper than CHAIN_MAX_REORG_DEPTH halts the chain: one logged error, later runs fail fast, nothing skipped; the documented repair resumes it', async () => {
    const start = (await head()) + 1n
    const snap = await anvil.client.snapshot()
    for (let i = 0; i < 4; i++) await transfer(f, user(u1).address, f.stranger, 1n)
    const shallow = app({ CHAIN_START_BLOCK: String(start), CHAIN_MAX_REORG_DEPTH: '2' })
    await run(shallow)
    const before = await actualNotificationKeys(f)
    const [cursorBefore] = await f.sql`SELECT block_number, block_hash FROM chain_cursors`
    await anvil.client.revert({ id: snap })
    for (let i = 0; i < 5; i++) await transfer(f, user(u2).address, f.stranger, 2n)
    const errors: string[] = []
    const captured = capturingLog(errors)
    await expect(watchChain(shallow, { log: captured })).rejects.toThrow(/reorganised deeper than CHAIN_MAX_REORG_DEPTH \(2\)/)
    expect(await actualNotificationKeys(f)).toEqual(before)
    const [halted] = await f.sql`SELECT block_number, block_hash, halted_at IS NOT NULL AS halted, halted_reason FROM chain_cursors`
    expect({ ...cursorBefore }).toEqual({ block_number: halted!.block_number, block_hash: halted!.block_hash })
    expect(halted!.halted).toBe(true)
    expect(halted!.halted_reason).toContain('reorganised deeper than CHAIN_MAX_REORG_DEPTH (2)')
    // Halted: the next runs fail at once with the stored reason, read no block and log nothing more.
    const calls = proxy()
    await expect(watchChain(app({ CHAIN_START_BLOCK: String(start), CHAIN_MAX_REORG_DEPTH: '2' }, calls.url), { log: captured })).rejects.toThrow(
      /watchChain is halted for chain \d+ .*reorganised deeper/,
    )
    expect(calls.calls.filter((c) => c.method === 'eth_getLogs' || c.method === 'eth_getBlockByNumber')).toEqual([])
    expect(errors).toHaveLength(1)
    // The documented manual recovery: rewind to a trusted block, clear the halt, and the next run reads the canonical chain.
    const trusted = start - 1n
    const trustedHash = (await anvil.client.getBlock({ blockNumber: trusted })).hash
    await f.sql`DELETE FROM chain_events WHERE block_number > ${trusted.toString()}`
    await f.sql`DELETE FROM chain_blocks WHERE block_number > ${trusted.toString()}`
    await f.sql`UPDATE chain_cursors SET block_number = ${trusted.toString()}, block_hash = ${trustedHash}, halted_at = NULL, halted_reason = NULL`
    const end = await head()
    expect(await run(shallow)).toMatchObject({ reorgDepth: 0, fromBlock: String(start), events: 5 })
    expect(await actualNotificationKeys(f)).toEqual(await expectedNotificationKeys(f, start, end))
    expect(await notificationCounts(f)).toEqual({ [user(u2).id]: 5 })
  })

  test('a cursor block the chain no longer has (a node reset below it) halts the chain instead of skipping', async () => {
    const start = (await head()) + 1n
    const snap = await anvil.client.snapshot()
    for (let i = 0; i < 3; i++) await transfer(f, user(u1).address, f.stranger, 1n)
    const a = app({ CHAIN_START_BLOCK: String(start), CHAIN_MAX_REORG_DEPTH: '2' })
    await run(a)
    // Back to before the range, with nothing mined since: the cursor's block number is above the head now.
    await anvil.client.revert({ id: snap })
    await expect(watchChain(a, { log })).rejects.toThrow(/no longer has the cursor block/)
    const [row] = await f.sql`SELECT halted_at IS NOT NULL AS halted FROM chain_cursors`
    expect(row!.halted).toBe(true)
  })
})

describe('watchChain: one runner at a time', () => {
  test('two concurrent runs (two servers): exactly one does the work, the other returns skipped', async () => {
    const start = (await head()) + 1n
    for (let i = 0; i < 6; i++) await transfer(f, user(u1).address, user(u2).address, 1n)
    const p = proxy()
    const env = { CHAIN_START_BLOCK: String(start), CHAIN_MAX_BLOCK_RANGE: '2' }
    const [first, second] = [app(env, p.url), app(env, p.url)]
    // Hold the first run inside its first eth_getLogs: it then provably holds the lock while the second starts.
    const held = p.hold('eth_getLogs')
    const running = watchChain(first, { log })
    await held.arrived
    expect(await watchChain(second, { log })).toEqual({ skipped: 'already running' })
    held.release()
    expect(await running).toMatchObject({ events: 6, ranges: 3 })
    expect(await notificationCounts(f)).toEqual({ [user(u1).id]: 6, [user(u2).id]: 6 })
    // The lock is released when the run ends: the next run is not skipped.
    expect(await watchChain(second, { log })).toMatchObject({ events: 0, caughtUp: true })
  })

  test('many runs racing on several pools: the work is done exactly once', async () => {
    const start = (await head()) + 1n
    for (let i = 0; i < 10; i++) await transfer(f, user(u1).address, f.stranger, 1n)
    const env = { CHAIN_START_BLOCK: String(start), CHAIN_MAX_BLOCK_RANGE: '1' }
    const results = await Promise.all(Array.from({ length: 6 }, () => watchChain(app(env), { log })))
    const worked = results.filter((r) => !('skipped' in r)) as WatchChainResult[]
    expect(worked.reduce((n, r) => n + r.events, 0)).toBe(10)
    expect(await notificationCounts(f)).toEqual({ [user(u1).id]: 10 })
    const [dups] = await f.sql`SELECT count(*)::int AS n FROM (SELECT block_hash, log_index FROM chain_events GROUP BY 1, 2 HAVING count(*) > 1) d`
    expect(dups!.n).toBe(0)
  })
})

describe('watchChain: an unreachable chain', () => {
  test('fails with a clear error and creates no cursor', async () => {
    const port = await freePort()
    await expect(watchChain(app({}, `http://127.0.0.1:${port}`), { log })).rejects.toThrow(
      `chain RPC at 127.0.0.1:${port} is unreachable (CHAIN_RPC_URL)`,
    )
    expect(await f.sql`SELECT * FROM chain_cursors`).toHaveLength(0)
  })
})

/** Every ledger row belongs to a block that is on the chain now. */
async function expectLedgerCanonical() {
  const rows = await f.sql`SELECT DISTINCT block_number, block_hash FROM chain_events`
  for (const r of rows) {
    const block = await anvil.client.getBlock({ blockNumber: BigInt(r.block_number) })
    expect(r.block_hash).toBe(block.hash)
  }
}
