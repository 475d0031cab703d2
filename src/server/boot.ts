import type { Server } from 'bun'
import type { Config } from './config'
import { runMigrations } from './db/migrate'
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
export async function startServer(config: Config, opts: { log?: Logger; jobModules?: string[] } = {}): Promise<RunningServer> {
  const log = opts.log ?? createLogger({ level: config.LOG_LEVEL, pretty: config.LOG_PRETTY })
  const registry = buildRegistry(await loadJobModules(opts.jobModules ?? []))
  const serverApp = createServerApp({ config, log, registry })
  const workerManager = new WorkerManager(serverApp, { jobModules: opts.jobModules })
  serverApp.workerManager = workerManager
  const app = createHttpApp(serverApp, workerManager).listen({ hostname: config.HOST, port: config.PORT })
  const http = app.server!
  const url = `http://${config.HOST === '0.0.0.0' ? '127.0.0.1' : config.HOST}:${http.port}`
  log.info({ url, workers: config.WORKER_COUNT }, 'server listening')

  let stopped = false
  const ready = (async () => {
    await untilDatabaseReachable(() => runMigrations(config.DATABASE_URL), log, () => stopped)
    if (stopped) return
    await workerManager.start()
    log.info({ url, workers: config.WORKER_COUNT }, 'server ready')
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
        await ready.catch(() => {})
        await workerManager.stop()
        await serverApp.dbHandle.close()
        log.info('shut down')
      })()
      return stopping
    },
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
