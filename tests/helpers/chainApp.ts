import { type Config, loadConfig } from '../../src/server/config'
import { createLogger } from '../../src/server/log'
import { createServerApp, type ServerApp } from '../../src/server/serverApp'
import { buildRegistry } from '../../src/server/workers/jobs/registry'

/** The config a chain test runs with: the test database and chain, plus whatever the test sets. */
export function chainTestConfig(databaseUrl: string, rpcUrl: string, env: Record<string, string> = {}): Config {
  return loadConfig({ NODE_ENV: 'test', DATABASE_URL: databaseUrl, CHAIN_RPC_URL: rpcUrl, WORKER_COUNT: '0', ...env })
}

/** An in-process ServerApp (real database pool, real viem clients) for calling the chain jobs directly. Close it. */
export function createChainTestApp(databaseUrl: string, rpcUrl: string, env: Record<string, string> = {}): ServerApp & { close(): Promise<void> } {
  const config = chainTestConfig(databaseUrl, rpcUrl, env)
  const log = createLogger({ level: process.env.TEST_LOG_LEVEL ?? 'silent' })
  const app = createServerApp({ config, log, registry: buildRegistry(), applicationName: 'chain-test' })
  return Object.assign(app, { close: () => app.dbHandle.close() })
}
