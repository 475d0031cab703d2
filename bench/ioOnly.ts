/**
 * `bun bench/ioOnly.ts [--quick] [--rounds N]`: only the I/O-bound shape (50,000 jobs that wait 100 ms),
 * ours and graphile-worker at the same slots alternately, N rounds each (default 3), so both are measured
 * in one sitting. `BENCH_OURS_ENVS='[{}, {"X":"1"}]'` runs ours once per environment in each round;
 * `BENCH_NO_PEER=1` skips graphile-worker.
 */
import { loadBenchConfig } from './config'
import { connect } from './db'
import { prepareOursDb, resetOursTable, startOurs } from './ours'
import { prepareGraphileDb } from './peers/graphile'
import { graphileIoBound } from './peers/shapes'
import { ioBound, OURS_SLOTS, WAIT_MS } from './shapes'

const argv = process.argv.slice(2)
const cfg = loadBenchConfig(argv)
const roundsAt = argv.indexOf('--rounds')
const rounds = roundsAt >= 0 ? Number(argv[roundsAt + 1]) : 3
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 50) throw new Error('--rounds must be an integer from 1 to 50')
const jobs = cfg.quick ? 5_000 : 50_000
const ceiling = OURS_SLOTS / (WAIT_MS / 1000)
const envs = JSON.parse(process.env.BENCH_OURS_ENVS ?? '[{}]') as Record<string, string>[]
const oursUrl = await prepareOursDb()
const gUrl = process.env.BENCH_NO_PEER ? null : await prepareGraphileDb()
const results: Record<string, unknown>[] = []
const brief = (r: Awaited<ReturnType<typeof ioBound>>) => ({
  jobsPerSec: r.jobsPerSec,
  ofCeiling: Math.round((r.jobsPerSec / ceiling) * 1000) / 1000,
  cpuSystem: r.cpu.systemSeconds,
  cpuPostgres: r.cpu.postgresSeconds,
})
for (let round = 1; round <= rounds; round++) {
  for (const [i, env] of envs.entries()) {
    await resetOursTable(oursUrl)
    const server = await startOurs(oursUrl, env)
    const sql = connect(oursUrl, 2)
    try {
      const r = await ioBound(cfg, {
        name: 'ours',
        pids: [server.spawned.proc.pid, ...server.pids],
        insertBacklog: async (n) => {
          await sql`INSERT INTO worker_jobs (type, user_id, due, data) SELECT 'wait', 0, now(), ${sql.json({ ms: WAIT_MS })} FROM generate_series(1, ${n})`
        },
        drained: async () => (await sql`SELECT 1 FROM worker_jobs WHERE type = 'wait' AND finished IS NULL LIMIT 1`).length === 0,
        remaining: async () => Number((await sql`SELECT count(*) AS n FROM worker_jobs WHERE finished IS NULL`)[0]?.n),
        submitProbe: async () => {},
      }, jobs)
      results.push({ system: envs.length > 1 ? `ours, env ${i}` : 'ours', round, ...brief(r) })
    } finally {
      await sql.end()
      await server.stop()
    }
  }
  if (!gUrl) continue
  results.push({ system: 'graphile-worker', round, ...brief(await graphileIoBound(cfg, gUrl, jobs)) })
}
console.table(results)
process.exit(0)
