/**
 * The durable sender's throughput against anvil (automine on): sends per second from one wallet and from
 * four wallets at once, each send recorded, broadcast and waited for until mined (sendOnce), as a job step
 * would. A scenario of `npm run bench` (sendsPerWallet per wallet); alone: `bun bench/sends.ts [--sends N]`.
 */
import { createChainClients } from '../src/server/chain/clients'
import { type SenderDeps, sendOnce } from '../src/server/chain/sender'
import { loadConfig } from '../src/server/config'
import { createDb } from '../src/server/db/client'
import { runMigrations } from '../src/server/db/migrate'
import { createLogger } from '../src/server/log'
import { ANVIL_KEYS, startAnvil } from '../tests/helpers/anvil'
import { dropDatabase, recreateDatabase } from './db'
import { round } from './stats'

export interface SendRate {
  wallets: number
  sends: number
  seconds: number
  sendsPerSec: number
  /** Milliseconds from one send of a wallet to its next: record, sign, broadcast, receipt. */
  msPerSendPerWallet: number
}

const TO = '0x000000000000000000000000000000000000dEaD'

/** One wallet, then four in parallel, each sending `perWallet` transfers one after the other (as its jobs would under keyConcurrency 1). */
export async function measureSends(perWallet: number): Promise<{ oneWallet: SendRate; fourWallets: SendRate }> {
  const log = createLogger({ level: 'silent' })
  const anvil = await startAnvil()
  const dbUrl = await recreateDatabase('bench_sends')
  await runMigrations(dbUrl)
  const handle = createDb(dbUrl, { max: 8 })
  const run = async (label: string, keys: readonly `0x${string}`[]): Promise<SendRate> => {
    const wallets = keys.map((key): SenderDeps => {
      const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: dbUrl, CHAIN_RPC_URL: anvil.url, SERVER_WALLET_PRIVATE_KEY: key })
      return { db: handle.db, clients: createChainClients(config, config.chains[0]!), chainId: 31337, log, pollMs: 5 }
    })
    const t0 = performance.now()
    await Promise.all(
      wallets.map(async (deps, w) => {
        for (let i = 0; i < perWallet; i++) await sendOnce(deps, { key: `${label}:${w}:${i}`, step: 'bench', to: TO, value: 1n, gas: 21_000n })
      }),
    )
    const seconds = (performance.now() - t0) / 1000
    const sends = perWallet * keys.length
    return { wallets: keys.length, sends, seconds: round(seconds, 2), sendsPerSec: round(sends / seconds, 1), msPerSendPerWallet: round((seconds * 1000) / perWallet, 1) }
  }
  try {
    const oneWallet = await run('one wallet', [ANVIL_KEYS[1]])
    const fourWallets = await run('four wallets', [ANVIL_KEYS[1], ANVIL_KEYS[2], ANVIL_KEYS[3], ANVIL_KEYS[4]])
    return { oneWallet, fourWallets }
  } finally {
    await handle.close()
    await anvil.stop()
    await dropDatabase('bench_sends')
  }
}

if (import.meta.main) {
  const arg = process.argv.indexOf('--sends')
  const r = await measureSends(arg > 0 ? Number(process.argv[arg + 1]) : 200)
  for (const s of [r.oneWallet, r.fourWallets]) {
    console.log(`${s.wallets} wallet(s): ${s.sends} sends in ${s.seconds} s = ${s.sendsPerSec} sends/s (${s.msPerSendPerWallet} ms per send per wallet)`)
  }
}
