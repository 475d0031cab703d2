import { startServer } from './boot'
import { ConfigError, type Config, loadConfig } from './config'

/**
 * Loads the config (a bad variable ends the process with exit code 1 and one line naming it), boots the
 * server, and wires SIGINT/SIGTERM to a graceful stop. A second signal exits at once.
 */
export async function main(opts: { jobModules?: string[] } = {}): Promise<void> {
  let config: Config
  try {
    config = loadConfig()
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message)
      process.exit(1)
    }
    throw err
  }
  const server = await startServer(config, { jobModules: opts.jobModules })
  server.ready.catch((err) => {
    server.serverApp.log.fatal({ err }, 'boot failed')
    process.exit(1)
  })
  let signals = 0
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      if (++signals > 1) process.exit(1)
      server.stop().then(
        () => process.exit(0),
        (err) => {
          server.serverApp.log.error({ err }, 'shutdown failed')
          process.exit(1)
        },
      )
    })
  }
}
