/**
 * `bun bench/latencyOnly.ts [--quick] [--rounds N]`: only the pickup-latency scenario, ours and
 * graphile-worker's best configuration alternately, N rounds each (default 3), so both are measured in
 * one sitting under the same machine state (this machine's commit time drifts by 2x over minutes).
 * `BENCH_OURS_ENVS='[{}, {"WORKER_HEAP_HINT_MB":"120"}]'` runs ours once per environment in each round,
 * to compare settings side by side; `BENCH_NO_PEER=1` skips graphile-worker. `--samples N` takes N samples
 * per system and round instead of the configuration's (a p99 of 1,000 is its 10th-worst sample: noisy).
 */
import { loadBenchConfig } from './config'
import type { LatencyResult } from './latency'
import { oursLatency, prepareOursDb, resetOursTable, startOurs } from './ours'
import { GRAPHILE_BEST, graphileLatency, prepareGraphileDb } from './peers/graphile'

const argv = process.argv.slice(2)
const cfg = loadBenchConfig(argv)
const roundsAt = argv.indexOf('--rounds')
const rounds = roundsAt >= 0 ? Number(argv[roundsAt + 1]) : 3
const samplesAt = argv.indexOf('--samples')
if (samplesAt >= 0) {
  const n = Number(argv[samplesAt + 1])
  if (!Number.isInteger(n) || n < 1 || n > 100_000) throw new Error('--samples must be an integer from 1 to 100000')
  cfg.latencySamples = n
}
const envs = JSON.parse(process.env.BENCH_OURS_ENVS ?? '[{}]') as Record<string, string>[]
const oursUrl = await prepareOursDb()
// As in `npm run bench` (where this scenario follows the throughput runs) and in a server that has been
// running: finished rows are kept (7 days by default). On a table analyzed while empty the first round's
// connections planned every statement for an empty table, and kept those plans as it grew.
await resetOursTable(oursUrl, 20_000)
const gUrl = process.env.BENCH_NO_PEER ? null : await prepareGraphileDb()
const brief = (r: LatencyResult) => ({
  p50: r.p50,
  p95: r.p95,
  p99: r.p99,
  submitP50: r.submitCallP50,
  submitP99: r.submitCallP99,
  afterSubmitP50: r.beyondSubmit.p50,
  afterSubmitP99: r.beyondSubmit.p99,
})
const results: Record<string, unknown>[] = []
for (let round = 1; round <= rounds; round++) {
  for (const [i, env] of envs.entries()) {
    const server = await startOurs(oursUrl, env)
    try {
      results.push({ system: envs.length > 1 ? `ours, env ${i}` : 'ours', round, ...brief(await oursLatency(cfg, oursUrl)) })
    } finally {
      await server.stop()
    }
  }
  if (!gUrl) continue
  const g = await graphileLatency(cfg, gUrl, GRAPHILE_BEST, `graphile-worker best: pickup latency (round ${round})`)
  results.push({ system: 'graphile-worker best', round, ...brief(g.latency) })
}
console.table(results)
process.exit(0)
