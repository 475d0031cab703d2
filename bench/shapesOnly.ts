/**
 * `bun bench/shapesOnly.ts [--quick]`: only our engine's shapes (I/O-bound, priority under load, the
 * limited type inside a flood), as `npm run bench` measures them; one JSON line on stdout.
 */
import { loadBenchConfig } from './config'
import { prepareOursDb } from './ours'
import { oursShapes } from './shapes'

const cfg = loadBenchConfig(process.argv.slice(2))
const url = await prepareOursDb()
const r = await oursShapes(cfg, url)
console.log(
  JSON.stringify({
    ioBoundJobsPerSec: r.ioBound.jobsPerSec,
    ioBoundOfCeiling: r.ioBound.ofCeiling,
    priorityP99Ms: r.priority.high.p99,
    controlP99Ms: r.priority.control.p99,
    ...r.limited,
  }),
)
process.exit(0)
