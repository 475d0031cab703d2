import { afterAll, beforeAll, beforeEach, describe, expect, setDefaultTimeout, test } from 'bun:test'
import { type Hex, toEventSelector } from 'viem'
import { erc20TransferHandler } from '../../src/server/chain/handlers/erc20Transfer'
import { backoffMs, GROW_AFTER_SUCCESSES, parseRetryAfter, RangeSizer } from '../../src/server/chain/providerLimits'
import { watchChain } from '../../src/server/chain/watcher'
import { createLogger } from '../../src/server/log'
import { type Anvil, startAnvil } from '../helpers/anvil'
import { createChainTestApp } from '../helpers/chainApp'
import {
  actualNotificationKeys,
  expectedNotificationKeys,
  resetWatchState,
  setupTokenFixture,
  type TokenFixture,
  transfer,
} from '../helpers/chainFixture'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type RpcCall, startRpcProxy } from '../helpers/rpcProxy'

setDefaultTimeout(120_000)

const log = createLogger({ level: 'silent' })

describe('range size and backoff (pure)', () => {
  test('halves on a refusal, never below 1, doubles back after a run of successes, never above the max', () => {
    const s = new RangeSizer(64)
    expect(s.size).toBe(64)
    s.refused(64)
    expect(s.size).toBe(32)
    s.refused(32)
    s.refused(16)
    s.refused(8)
    expect(s.size).toBe(4)
    s.refused(1)
    expect(s.size).toBe(1)
    for (let i = 0; i < GROW_AFTER_SUCCESSES - 1; i++) s.succeeded()
    expect(s.size).toBe(1)
    s.succeeded()
    expect(s.size).toBe(2)
    for (let i = 0; i < GROW_AFTER_SUCCESSES * 20; i++) s.succeeded()
    expect(s.size).toBe(64)
    // A refusal in the middle of a streak starts the streak over.
    s.refused(64)
    for (let i = 0; i < GROW_AFTER_SUCCESSES - 1; i++) s.succeeded()
    s.refused(32)
    expect(s.size).toBe(16)
  })

  test('backoff: exponential and capped, or what Retry-After says', () => {
    const o = { baseMs: 250, maxMs: 10_000 }
    expect([1, 2, 3, 4, 10].map((a) => backoffMs(a, o))).toEqual([250, 500, 1000, 2000, 10_000])
    expect(backoffMs(5, { ...o, retryAfterMs: 3000 })).toBe(3000)
    expect(backoffMs(5, { ...o, retryAfterMs: 0 })).toBe(0)
    expect(backoffMs(1, { ...o, retryAfterMs: 3_600_000 })).toBe(60_000)
    expect(parseRetryAfter('7')).toBe(7000)
    expect(parseRetryAfter(new Date(Date.UTC(2030, 0, 1, 0, 0, 10)).toUTCString(), Date.UTC(2030, 0, 1))).toBe(10_000)
    expect(parseRetryAfter('soon')).toBeNull()
    expect(parseRetryAfter(null)).toBeNull()
  })
})

let anvil: Anvil
let db: TestDatabase
let f: TokenFixture

beforeAll(async () => {
  ;[anvil, db] = await Promise.all([startAnvil(), createTestDatabase('chain_limits')])
  f = await setupTokenFixture(anvil.client, db.url)
})

afterAll(async () => {
  await f?.sql.end()
  await anvil?.stop()
  await db?.drop()
})

beforeEach(() => resetWatchState(f))

const head = () => anvil.client.getBlockNumber({ cacheTime: 0 })

/** A deterministic PRNG (mulberry32), so "429 at random" is the same on every run. */
function random(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
}

const width = (call: RpcCall) => {
  const { fromBlock, toBlock } = (call.params?.[0] ?? {}) as { fromBlock: Hex; toBlock: Hex }
  return Number(BigInt(toBlock) - BigInt(fromBlock)) + 1
}

describe('watchChain behind a provider with limits', () => {
  test('ranges over 4 blocks refused (-32005) and 429s at random: every event once, the cursor at the head', async () => {
    const start = (await head()) + 1n
    const [a, b] = f.users
    for (let i = 0; i < 40; i++) {
      const [from, to] = [[a!.address, b!.address], [a!.address, f.stranger], [f.stranger, b!.address], [f.stranger, f.minter]][i % 4]!
      await transfer(f, from!, to!, BigInt(i + 1))
    }
    const end = await head()
    const rnd = random(42)
    let refused = 0
    let limited = 0
    const proxy = startRpcProxy(anvil.url, {
      answer: (call) => {
        if (rnd() < 0.15) {
          limited++
          return { httpStatus: 429, headers: { 'retry-after': '0' } }
        }
        if (call.method === 'eth_getLogs' && width(call) > 4) {
          refused++
          return { rpcError: { code: -32005, message: 'query returned more than 10000 results. Try with this block range [0x1, 0x4].' } }
        }
        return undefined
      },
    })
    const app = createChainTestApp(db.url, proxy.url, { CHAIN_START_BLOCK: String(start), CHAIN_MAX_BLOCK_RANGE: '64' })
    try {
      // A run may end early (its time budget); the cron would start the next. Here: run until caught up.
      let caughtUp = false
      for (let runs = 0; !caughtUp && runs < 10; runs++) {
        const res = await watchChain(app, { log })
        if ('skipped' in res) throw new Error('unexpectedly skipped')
        caughtUp = res.caughtUp
      }
      expect(caughtUp).toBe(true)
      expect(refused).toBeGreaterThan(0)
      expect(limited).toBeGreaterThan(0)
      const [cursor] = await f.sql`SELECT block_number FROM chain_cursors`
      expect(BigInt(cursor!.block_number)).toBe(end)
      expect(await actualNotificationKeys(f)).toEqual(await expectedNotificationKeys(f, start, end))
      const [dups] = await f.sql`SELECT count(*)::int AS n FROM (SELECT block_hash, log_index FROM chain_events GROUP BY 1, 2 HAVING count(*) > 1) d`
      expect(dups!.n).toBe(0)
      // The size adapted: far fewer refusals than ranges (it does not ask for 64 blocks every time).
      const getLogs = proxy.calls.filter((c) => c.method === 'eth_getLogs')
      expect(refused).toBeLessThan(getLogs.length / 2)
      // Only the Transfer topic is asked for, never every log of the chain.
      const topic = toEventSelector(erc20TransferHandler.event)
      for (const c of getLogs) expect((c.params[0] as { topics?: Hex[] }).topics?.[0]).toBe(topic)
    } finally {
      await app.close()
      await proxy.stop()
    }
  })

  test('a provider that keeps answering 429 fails the run as "rate limiting", not "unreachable"', async () => {
    const proxy = startRpcProxy(anvil.url, { answer: () => ({ httpStatus: 429, headers: { 'retry-after': '0' } }) })
    const app = createChainTestApp(db.url, proxy.url, { CHAIN_START_BLOCK: String(await head()) })
    try {
      const err = await watchChain(app, { log }).then(
        () => null,
        (e: Error) => e,
      )
      expect(err?.message).toContain(`chain RPC at 127.0.0.1:${new URL(proxy.url).port} is rate limiting`)
      expect(err?.message).not.toContain('unreachable')
    } finally {
      await app.close()
      await proxy.stop()
    }
  })
})
