import { isIP } from 'node:net'
import type { Server } from 'bun'
import { type Config, ConfigError } from './config'
import { checkConnectionBudget } from './db/budget'
import { runMigrations } from './db/migrate'
import type { GraphqlExtension } from './graphql/extend'
import { createHttpApp } from './http/app'
import { createLogger, type Logger } from './log'
import { createServerApp, type ServerApp } from './serverApp'
import { buildRegistry, loadJobModules } from './workers/jobs/registry'
import { WorkerManager } from './workers/manager'

export interface RunningServer {
  serverApp: ServerApp
  workerManager: WorkerManager
  http: Server<unknown>
  url: string
  /** Resolves once the database is migrated and the workers are started. */
  ready: Promise<void>
  /** Graceful stop: HTTP stops accepting, children drain, the database pool closes. */
  stop(): Promise<void>
}

/**
 * Boots the whole server. HTTP comes up first, so /health can say "degraded" (503) while the database
 * is unreachable; the server keeps retrying to reach it, then migrates it, seeds the built-in jobs and
 * spawns the children. `jobModules` lets an application (or a test) add job types to every process.
 */
export interface StartOptions {
  log?: Logger
  /** Modules exporting a `jobs` array: the application's job types, loaded by every process. */
  jobModules?: string[]
  /** The application's own GraphQL types and resolvers (main process only). */
  graphql?: readonly GraphqlExtension[]
}

export async function startServer(config: Config, opts: StartOptions = {}): Promise<RunningServer> {
  const log = opts.log ?? createLogger({ level: config.LOG_LEVEL, pretty: config.LOG_PRETTY })
  const registry = buildRegistry(await loadJobModules(opts.jobModules ?? []))
  const serverApp = createServerApp({ config, log, registry, dbPoolSize: config.DB_POOL_SIZE })
  const workerManager = new WorkerManager(serverApp, { jobModules: opts.jobModules })
  serverApp.workerManager = workerManager
  let app: ReturnType<typeof createHttpApp>
  try {
    // Elysia turns reusePort on by default, and with it a second server on a taken port starts silently
    // and shares the traffic; off, the port being taken is an error.
    app = createHttpApp(serverApp, workerManager, { listeningUrl: () => serverApp.baseUrl().href, graphql: opts.graphql }).listen({ hostname: config.HOST, port: config.PORT, reusePort: false })
  } catch (err) {
    await serverApp.dbHandle.close()
    throw listenError(err, config)
  }
  const http = app.server!
  const url = `http://${urlHost(config.HOST)}:${http.port}`
  serverApp.setListeningUrl(url)
  log.info({ url, workers: config.WORKER_COUNT }, 'server listening')
  // After listening: a boot that fails to listen prints its one line and nothing else.
  if (!config.METRICS_TOKEN) {
    log[config.NODE_ENV === 'production' ? 'warn' : 'info']('/metrics is open to anyone who reaches this server: METRICS_TOKEN is unset')
  }

  let stopped = false
  const ready = (async () => {
    await untilDatabaseReachable(() => runMigrations(config.DATABASE_URL), log, () => stopped)
    if (stopped) return
    // Before any child opens its pools: a budget that cannot fit fails here, in one line.
    const connections = await checkConnectionBudget(serverApp.dbHandle.client, config)
    await workerManager.start()
    log.info({ url, workers: config.WORKER_COUNT, connections: connections.needed, connectionsFree: connections.free }, 'server ready')
  })()

  let stopping: Promise<void> | null = null
  return {
    serverApp,
    workerManager,
    http,
    url,
    ready,
    stop() {
      stopping ??= (async () => {
        log.info('shutting down')
        stopped = true
        await app.stop()
        await app.closeGraphql()
        await ready.catch(() => {})
        await workerManager.stop()
        await serverApp.dbHandle.close()
        log.info('shut down')
      })()
      return stopping
    },
  }
}

/** The host part of the server's URL: a wildcard address is reached on loopback; IPv6 goes in brackets. */
function urlHost(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1'
  if (host === '::') return '[::1]'
  return isIP(host) === 6 ? `[${host}]` : host
}

/** The listen errors an operator fixes in HOST/PORT, as one line; anything else as it is. */
function listenError(err: unknown, config: Config): unknown {
  const where = `PORT ${config.PORT} on ${config.HOST}`
  switch ((err as { code?: string }).code) {
    case 'EADDRINUSE':
      return new ConfigError(`${where} is already in use`)
    case 'EACCES':
      return new ConfigError(`${where}: permission denied`)
    case 'EADDRNOTAVAIL':
      return new ConfigError(`HOST ${config.HOST} is not an address of this machine (cannot listen on it)`)
    default:
      return err
  }
}

const CONNECTION_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'ETIMEDOUT', 'EHOSTUNREACH', 'CONNECT_TIMEOUT', '57P03', '3D000'])

/** Retries `step` with capped backoff while the database cannot be reached; any other error is thrown. */
async function untilDatabaseReachable(step: () => Promise<void>, log: Logger, stopped: () => boolean): Promise<void> {
  for (let attempt = 0; !stopped(); attempt++) {
    try {
      return await step()
    } catch (err) {
      const code = (err as { code?: string; cause?: { code?: string } }).code ?? (err as { cause?: { code?: string } }).cause?.code
      if (!code || !CONNECTION_ERRORS.has(code)) throw err
      const delay = Math.min(10_000, 250 * 2 ** attempt)
      log.error({ code, retryInMs: delay }, 'database unreachable; retrying')
      await new Promise((r) => setTimeout(r, delay))
    }
  }
}
