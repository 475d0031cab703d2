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
  /** Graceful stop: HTTP stops accepting, children drain, the database pool closes. */
  stop(): Promise<void>
}

/**
 * Boots the whole server: migrate, build the ServerApp, start the WorkerManager (seed, spawn children),
 * then serve HTTP. `jobModules` lets an application (or a test) add job types that every process loads.
 */
export async function startServer(config: Config, opts: { log?: Logger; jobModules?: string[] } = {}): Promise<RunningServer> {
  const log = opts.log ?? createLogger({ level: config.LOG_LEVEL, pretty: config.LOG_PRETTY })
  await runMigrations(config.DATABASE_URL)
  const registry = buildRegistry(await loadJobModules(opts.jobModules ?? []))
  const serverApp = createServerApp({ config, log, registry })
  const workerManager = new WorkerManager(serverApp, { jobModules: opts.jobModules })
  serverApp.workerManager = workerManager
  await workerManager.start()
  const app = createHttpApp(serverApp, workerManager).listen({ hostname: config.HOST, port: config.PORT })
  const http = app.server!
  const url = `http://${config.HOST === '0.0.0.0' ? '127.0.0.1' : config.HOST}:${http.port}`
  log.info({ url, workers: config.WORKER_COUNT }, 'server listening')
  let stopping: Promise<void> | null = null
  return {
    serverApp,
    workerManager,
    http,
    url,
    stop() {
      stopping ??= (async () => {
        log.info('shutting down')
        await app.stop()
        await workerManager.stop()
        await serverApp.dbHandle.close()
        log.info('shut down')
      })()
      return stopping
    },
  }
}
