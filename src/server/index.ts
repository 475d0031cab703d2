/** Entry point: `bun src/server/index.ts` (npm start). */
import { ConfigError, loadConfig } from './config'
import { startServer } from './boot'

let config: ReturnType<typeof loadConfig>
try {
  config = loadConfig()
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(err.message)
    process.exit(1)
  }
  throw err
}

const server = await startServer(config)
let signals = 0
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    // A second signal means "now": skip the drain.
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
