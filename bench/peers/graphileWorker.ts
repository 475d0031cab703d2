/**
 * graphile-worker's process for the benchmark, so its workers run apart from the bench like ours do.
 * argv[2] is a JSON GraphileOptions: { connectionString, concurrency?, localQueueSize?, completeJobBatchDelay? }.
 * Options left out stay at graphile-worker's defaults. Logs go to stdout (discarded), at its default level.
 */
import { run } from 'graphile-worker'
import { type ProbeData, reportProbeStart } from '../probe'
import { stopOnSignal } from './stopOnSignal'

export interface GraphileOptions {
  connectionString: string
  concurrency?: number
  localQueueSize?: number
  completeJobBatchDelay?: number
}

const opts = JSON.parse(process.argv[2] ?? '{}') as GraphileOptions
const worker: Record<string, unknown> = {}
if (opts.localQueueSize !== undefined) worker.localQueue = { size: opts.localQueueSize }
if (opts.completeJobBatchDelay !== undefined) worker.completeJobBatchDelay = opts.completeJobBatchDelay

const runner = await run({
  connectionString: opts.connectionString,
  ...(opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {}),
  noHandleSignals: true,
  preset: { worker },
  taskList: {
    noop: async () => {},
    // The I/O-bound shape: a timer, as a handler waiting on an RPC call.
    wait: async (payload) => {
      await new Promise((r) => setTimeout(r, (payload as { ms: number }).ms))
    },
    latencyProbe: async (payload) => {
      reportProbeStart(payload as ProbeData)
    },
  },
})
process.send?.({ type: 'ready' })

stopOnSignal(() => runner.stop())
