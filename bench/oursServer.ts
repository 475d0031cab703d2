/**
 * Our server as the benchmark runs it: the real boot (migrations, WorkerManager, children, HTTP) with the
 * bench job types added through the public `jobModules` option. Configuration comes from the environment
 * like any deployment. Reports readiness and its URL to the bench over IPC.
 */
import { startServer } from '../src/server/boot'
import { loadConfig } from '../src/server/config'

const server = await startServer(loadConfig(process.env), {
  jobModules: [new URL('./benchJobs.ts', import.meta.url).pathname],
})
process.send?.({ type: 'ready', url: server.url })

let stopping = false
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (stopping) process.exit(1)
    stopping = true
    server.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    )
  })
}
