/**
 * pg-boss's process for the benchmark. argv[2] is a JSON PgBossOptions: { connectionString, work? } where
 * `work` are the options passed to boss.work (left out: pg-boss's defaults). Constructor at its defaults.
 */
import { PgBoss, type WorkOptions } from 'pg-boss'
import { stopOnSignal } from './stopOnSignal'

export interface PgBossOptions {
  connectionString: string
  work?: WorkOptions
}

const opts = JSON.parse(process.argv[2] ?? '{}') as PgBossOptions
const boss = new PgBoss({ connectionString: opts.connectionString })
boss.on('error', (err) => console.error(err))
await boss.start()
const noop = async () => {}
if (opts.work) await boss.work('noop', opts.work, noop)
else await boss.work('noop', noop)
process.send?.({ type: 'ready' })

stopOnSignal(() => boss.stop({ graceful: true, timeout: 10_000 }))
