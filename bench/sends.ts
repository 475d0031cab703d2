/**
 * The durable sender's throughput against anvil (automine on): sends per second from one wallet and from
 * four wallets at once, each send recorded, broadcast and waited for until mined (sendOnce), as a job step
 * would. Run with `bun bench/sends.ts [--sends N]` (default 200 per wallet). Not part of `npm run bench`.
 */
import { createChainClients } from '../src/server/chain/clients'
import { type SenderDeps, sendOnce } from '../src/server/chain/sender'
import { loadConfig } from '../src/server/config'
import { createDb } from '../src/server/db/client'
import { runMigrations } from '../src/server/db/migrate'
import { createLogger } from '../src/server/log'
import { ANVIL_KEYS, startAnvil } from '../tests/helpers/anvil'
import { dropDatabase, recreateDatabase } from './db'

const arg = process.argv.indexOf('--sends')
const perWallet = arg > 0 ? Number(process.argv[arg + 1]) : 200
const log = createLogger({ level: 'silent' })
const TO = '0x000000000000000000000000000000000000dEaD'

const anvil = await startAnvil()
const dbUrl = await recreateDatabase('bench_sends')
await runMigrations(dbUrl)
const handle = createDb(dbUrl, { max: 8 })

async function run(label: string, keys: readonly `0x${string}`[]) {
  const wallets = keys.map((key): SenderDeps => {
    const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: dbUrl, CHAIN_RPC_URL: anvil.url, SERVER_WALLET_PRIVATE_KEY: key })
    return { db: handle.db, clients: createChainClients(config, config.chains[0]!), chainId: 31337, log, pollMs: 5 }
  })
  const t0 = performance.now()
  // Each wallet sends one after the other (as its jobs would under keyConcurrency 1); wallets in parallel.
  await Promise.all(
    wallets.map(async (deps, w) => {
      for (let i = 0; i < perWallet; i++) await sendOnce(deps, { key: `${label}:${w}:${i}`, step: 'bench', to: TO, value: 1n, gas: 21_000n })
    }),
  )
  const seconds = (performance.now() - t0) / 1000
  const total = perWallet * keys.length
  console.log(`${label}: ${total} sends in ${seconds.toFixed(2)} s = ${(total / seconds).toFixed(0)} sends/s (${(seconds * 1000 / perWallet).toFixed(1)} ms per send per wallet)`)
}

try {
  await run('one wallet', [ANVIL_KEYS[1]])
  await run('four wallets', [ANVIL_KEYS[1], ANVIL_KEYS[2], ANVIL_KEYS[3], ANVIL_KEYS[4]])
} finally {
  await handle.close()
  await anvil.stop()
  await dropDatabase('bench_sends')
}
