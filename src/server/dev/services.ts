import { join } from 'node:path'
import { type Config, type EnvConfig, withServices } from '../config'
import type { Logger } from '../log'

export interface DevServices {
  /** The environment's config with DATABASE_URL and CHAIN_RPC_URL filled in by the services started here. */
  config: Config
  /** Stops what was started. Call after the server has stopped: its jobs use them while draining. */
  stop(): Promise<void>
}

/**
 * The one-command start: outside production, an unset DATABASE_URL starts an embedded Postgres (data kept
 * in DEV_DATA_DIR/postgres, database `dapp`) and no chain at all (neither CHAIN_RPC_URL nor CHAINS) starts
 * a local anvil, both at once.
 * Each module is imported only when needed, so a configured or production server never loads them.
 */
export async function startDevServices(env: EnvConfig, log: Logger): Promise<DevServices> {
  const stops: (() => Promise<void>)[] = []
  const stop = async () => {
    await Promise.all(stops.splice(0).map((s) => s().catch((err) => log.error({ err }, 'could not stop a development service'))))
  }
  const results = await Promise.allSettled([
    env.DATABASE_URL ??
      (async () => {
        const { startEmbeddedPostgres } = await import('./embeddedPostgres')
        const pg = await startEmbeddedPostgres({ dataDir: join(env.DEV_DATA_DIR, 'postgres'), database: 'dapp', log })
        stops.push(pg.stop)
        log.info({ url: pg.url, dataDir: pg.dataDir, postgresPid: pg.pid }, 'started embedded Postgres')
        return pg.url
      })(),
    env.CHAIN_RPC_URL || env.CHAINS
      ? env.CHAIN_RPC_URL
      : (async () => {
          const { startLocalChain } = await import('./localChain')
          const chain = await startLocalChain()
          stops.push(chain.stop)
          log.info({ url: chain.url, anvilPid: chain.pid }, 'started anvil')
          return chain.url
        })(),
  ])
  const failed = results.find((r) => r.status === 'rejected')
  if (failed) {
    await stop()
    throw failed.reason
  }
  const [databaseUrl, chainRpcUrl] = results.map((r) => (r as PromiseFulfilledResult<string | undefined>).value) as [string, string | undefined]
  return { config: withServices(env, { DATABASE_URL: databaseUrl, CHAIN_RPC_URL: chainRpcUrl }), stop }
}
