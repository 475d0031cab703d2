import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from 'bun:test'
import type { Address } from 'viem'
import { pruneChainLedger } from '../../src/server/chain/ledgerPrune'
import { watchChain } from '../../src/server/chain/watcher'
import { createDb } from '../../src/server/db/client'
import { createLogger } from '../../src/server/log'
import { type Anvil, startAnvil } from '../helpers/anvil'
import { createChainTestApp } from '../helpers/chainApp'
import { actualNotificationKeys, batchTransfer, expectedNotificationKeys, setupTokenFixture, type TokenFixture, transfer } from '../helpers/chainFixture'
import { createTestDatabase, type TestDatabase } from '../helpers/db'

setDefaultTimeout(300_000)

const log = createLogger({ level: 'silent' })

let anvil: Anvil
let db: TestDatabase
let f: TokenFixture

beforeAll(async () => {
  ;[anvil, db] = await Promise.all([startAnvil(), createTestDatabase('chain_ledger')])
  f = await setupTokenFixture(anvil.client, db.url)
})

afterAll(async () => {
  await f?.sql.end()
  await anvil?.stop()
  await db?.drop()
})

const count = async (table: 'chain_events' | 'chain_blocks' | 'notifications') => (await f.sql`SELECT count(*)::int AS n FROM ${f.sql(table)}`)[0]!.n as number

describe('the chain ledger stays bounded', () => {
  test('over 10,000 blocks and 1,000 strangers\' transfers, watched as the chain grows: only the 10 transfers that notified keep a row, and only the reorg window keeps hashes', async () => {
    const start = (await anvil.client.getBlockNumber({ cacheTime: 0 })) + 1n
    const strangers = Array.from({ length: 100 }, (_, i) => `0x${(0xbeef0000 + i).toString(16).padStart(40, '0')}` as Address)
    const app = createChainTestApp(db.url, anvil.url, { CHAIN_START_BLOCK: String(start), CHAIN_MAX_BLOCK_RANGE: '2000', CHAIN_MAX_REORG_DEPTH: '128' })
    let end = start
    try {
      // Ten rounds of 1,000 blocks, each with 100 strangers' transfers and one to a user, the watcher
      // catching up after each: the bound must hold all along, not only at the end.
      for (let round = 0; round < 10; round++) {
        await batchTransfer(f, f.stranger, strangers, strangers.map(() => 1n))
        await transfer(f, f.users[0]!.address, f.stranger, BigInt(round + 1))
        // In steps of 250: anvil's mining slows as its chain grows (about 1,000 blocks in 15 s near the end),
        // and one call must stay inside the client's timeout.
        for (let i = 0; i < 4; i++) await anvil.client.mine({ blocks: 250 })
        end = await anvil.client.getBlockNumber({ cacheTime: 0 })
        const res = await watchChain(app, { log, maxRunMs: 120_000 })
        // Only the transfers touching a user are even fetched: getLogs asks for the users' wallets, not every Transfer.
        expect(res).toMatchObject({ toBlock: String(end), caughtUp: true, events: 1 })
        expect(await count('chain_events')).toBe(round + 1)
        expect(await count('chain_blocks')).toBeLessThanOrEqual(129)
      }
    } finally {
      await app.close()
    }
    expect(end - start).toBeGreaterThanOrEqual(10_000n)
    expect(await actualNotificationKeys(f)).toEqual(await expectedNotificationKeys(f, start, end))
    expect(await count('notifications')).toBe(10)
    // 1,010 Transfer logs are on the chain; the 10 that notified someone are the ledger.
    expect(await count('chain_events')).toBe(10)
    // Block hashes: the reorg window (128 blocks below the cursor) and nothing older.
    expect(await count('chain_blocks')).toBeLessThanOrEqual(129)

    // The cleanup job's prune: a ledger row whose notifications are gone (their user was deleted), below
    // the reorg window, is collected; one still referenced is kept.
    await f.sql`DELETE FROM notifications WHERE data->>'value' IN ('1', '2', '3')`
    const handle = createDb(db.url, { max: 1 })
    try {
      expect(await pruneChainLedger(handle.db, { maxReorgDepth: 128 })).toBe(3)
    } finally {
      await handle.close()
    }
    expect(await count('chain_events')).toBe(7)
    expect(await count('notifications')).toBe(7)
  })
})
