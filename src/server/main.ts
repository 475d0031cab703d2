import { type StartOptions, startServer } from './boot'
import { ConfigError, type EnvConfig, loadEnvConfig } from './config'
import { startDevServices } from './dev/services'
import { createLogger, type Logger } from './log'
import { guardStrayErrors } from './strayErrors'

/**
 * Loads the config, starts the development services for an unset DATABASE_URL / CHAIN_RPC_URL, boots the
 * server, and wires SIGINT/SIGTERM to a graceful stop: the server first, then the services its jobs were
 * using. A second signal exits at once (the services' watchdogs then stop them). A ConfigError at any
 * step of the boot (bad variable, taken port, connection budget) ends the process with exit code 1 and its
 * one line on stderr; any other boot failure is logged with its stack.
 */
export async function main(opts: Pick<StartOptions, 'jobModules' | 'graphql'> = {}): Promise<void> {
  let env: EnvConfig
  try {
    env = loadEnvConfig()
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message)
      process.exit(1)
    }
    throw err
  }
  const log = createLogger({ level: env.LOG_LEVEL, pretty: env.LOG_PRETTY })
  guardStrayErrors(log)
  const services = await startDevServices(env, log).catch((err) => {
    log.fatal({ err }, 'could not start the development services')
    process.exit(1)
  })
  const bootFailed = async (err: unknown): Promise<never> => {
    reportBootFailure(err, log)
    await services.stop()
    process.exit(1)
  }
  const server = await startServer(services.config, { log, jobModules: opts.jobModules, graphql: opts.graphql }).catch(bootFailed)
  server.ready.catch(bootFailed)
  let signals = 0
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      if (++signals > 1) process.exit(1)
      const code = server.stop().then(
        () => 0,
        (err) => {
          log.error({ err }, 'shutdown failed')
          return 1
        },
      )
      code.then(async (c) => {
        await services.stop()
        process.exit(c)
      })
    })
  }
}

function reportBootFailure(err: unknown, log: Logger): void {
  if (err instanceof ConfigError) console.error(err.message)
  else log.fatal({ err }, 'boot failed')
}
