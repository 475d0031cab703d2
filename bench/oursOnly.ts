/**
 * `bun bench/oursOnly.ts [--quick]`: only our engine's scenarios (throughput on an empty table and with
 * finished rows, pickup latency, bulk submit, idle cost), one compact JSON line on stdout. For comparing
 * two commits of the engine in one sitting: run it in a worktree of each, alternately.
 */
import { bestOf, jobsPerSec } from './best'
import { loadBenchConfig } from './config'
import { clearRunRows, oursBulkSubmit, oursIdleCost, oursLatency, oursThroughput, prepareOursDb, resetOursTable, startOurs } from './ours'

const cfg = loadBenchConfig(process.argv.slice(2))
const url = await prepareOursDb()
const bulk = await oursBulkSubmit(cfg, url)
await resetOursTable(url)
let server = await startOurs(url)
const empty = await bestOf(cfg.throughputRuns, async (i) => {
  if (i > 0) await resetOursTable(url)
  return oursThroughput(cfg, url, server, `ours: throughput, empty table (run ${i + 1})`)
}, jobsPerSec)
const idle = await oursIdleCost(cfg, server)
const latency = await oursLatency(cfg, url)
await server.stop()
await resetOursTable(url, cfg.preFinishedRows)
server = await startOurs(url)
const scale = await bestOf(cfg.throughputRuns, async (i) => {
  if (i > 0) await clearRunRows(url)
  return oursThroughput(cfg, url, server, `ours: throughput, finished rows (run ${i + 1})`)
}, jobsPerSec)
await server.stop()
const rss = Math.max(...Object.values(empty.busyRssMb))
console.log(
  JSON.stringify({
    emptyJobsPerSec: empty.jobsPerSec,
    emptyRuns: empty.runs,
    scaleJobsPerSec: scale.jobsPerSec,
    latencyP50Ms: latency.p50,
    latencyP99Ms: latency.p99,
    bulkJobsPerSec: bulk.jobsPerSec,
    busyRssMb: rss,
    idleTxPerSecPerChild: idle.perSecondPerChild,
  }),
)
process.exit(0)
