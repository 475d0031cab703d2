/**
 * pg-boss's process for the benchmark. argv[2] is a JSON PgBossOptions: { connectionString, work?, queue? }
 * where `work` are the options passed to boss.work (left out: pg-boss's defaults) and `queue` the queue it
 * works (default `noop`). Constructor at its defaults.
 * The `wait` queue is the I/O-bound shape: each job waits `data.ms` on a timer, the jobs of a batch at once;
 * a job whose data has a probe port is the priority probe (same queue: pg-boss orders by priority within one).
 */
import { PgBoss, type WorkOptions } from 'pg-boss'
import { type ProbeData, reportProbeStart } from '../probe'
import { stopOnSignal } from './stopOnSignal'

export interface PgBossOptions {
  connectionString: string
  work?: WorkOptions
  queue?: 'noop' | 'wait'
}

const opts = JSON.parse(process.argv[2] ?? '{}') as PgBossOptions
const boss = new PgBoss({ connectionString: opts.connectionString })
boss.on('error', (err) => console.error(err))
await boss.start()
const queue = opts.queue ?? 'noop'
type WaitData = { ms: number } | ProbeData
const handler =
  queue === 'wait'
    ? async (jobs: { data: WaitData }[]) => {
        await Promise.all(
          jobs.map(async ({ data }) => {
            if ('port' in data) reportProbeStart(data)
            else await new Promise((r) => setTimeout(r, data.ms))
          }),
        )
      }
    : async () => {}
if (opts.work) await boss.work(queue, opts.work, handler as never)
else await boss.work(queue, handler as never)
process.send?.({ type: 'ready' })

stopOnSignal(() => boss.stop({ graceful: true, timeout: 10_000 }))
