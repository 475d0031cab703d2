/**
 * `npm run bench` (full) or `npm run bench -- --quick` (CI: keeps the harness working, never judged on speed).
 * `--update-readme` also replaces the results section of bench/README.md with this run's.
 * Runs every scenario against our engine, graphile-worker, pg-boss and raw Postgres on the same server,
 * one system at a time, then prints a markdown table and the same data as JSON (also written to
 * bench/results/latest.json). Progress goes to stderr.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import { loadBenchConfig } from './config'
import { machineInfo } from './machine'
import { bestOf, jobsPerSec } from './best'
import { clearRunRows, oursBulkSubmit, oursIdleCost, oursLatency, oursThroughput, prepareOursDb, resetOursTable, startOurs } from './ours'
import { GRAPHILE_BEST, GRAPHILE_DEFAULT, graphileBulkSubmit, graphileLatency, graphileThroughput, prepareGraphileDb } from './peers/graphile'
import { PGBOSS_BEST, PGBOSS_DEFAULT, pgbossBulkSubmit, pgbossThroughput, preparePgBossDb } from './peers/pgboss'
import { graphileShapes, pgbossShapes } from './peers/shapes'
import { measureRaw } from './raw'
import { measureScrape } from './metricsScrape'
import { measureSends } from './sends'
import { oursShapes } from './shapes'
import { summarizeResults, updateReadme } from './summary'
import { step } from './progress'

const cfg = loadBenchConfig(process.argv.slice(2))
const runLabel = (i: number) => (cfg.throughputRuns > 1 ? ` (run ${i + 1}/${cfg.throughputRuns})` : '')
const startedAt = new Date()
const t0 = performance.now()
const machine = await machineInfo()
const command = `npm run bench${cfg.quick ? ' -- --quick' : ''}`
step(`benchmark (${cfg.quick ? 'quick' : 'full'}): ${cfg.jobs.toLocaleString()} jobs per throughput run, ${cfg.latencySamples} latency samples`)
step(`machine: ${machine.cores} cores, Postgres ${machine.postgres}, Bun ${machine.bun}, load average ${machine.loadAvgAtStart}`)
if (machine.loadAvgAtStart > 0.5) step('WARNING: the machine is already busy; other work distorts the figures')

step('1/4 raw Postgres limit (pgbench)')
const raw = await bestOf(cfg.throughputRuns, (i) => measureRaw(cfg, `raw${runLabel(i)}`), (r) => r.rowsPerSec)

step('2/4 ours')
const oursUrl = await prepareOursDb()
const oursBulk = await oursBulkSubmit(cfg, oursUrl)
await resetOursTable(oursUrl)
let server = await startOurs(oursUrl)
const oursEmpty = await bestOf(cfg.throughputRuns, async (i) => {
  if (i > 0) await resetOursTable(oursUrl)
  return oursThroughput(cfg, oursUrl, server, `ours: throughput, empty table${runLabel(i)}`)
}, jobsPerSec)
const oursIdle = await oursIdleCost(cfg, server)
const oursLat = await oursLatency(cfg, oursUrl)
await server.stop()
step(`  ours: preloading ${cfg.preFinishedRows.toLocaleString()} finished rows`)
await resetOursTable(oursUrl, cfg.preFinishedRows)
server = await startOurs(oursUrl)
const oursScale = await bestOf(cfg.throughputRuns, async (i) => {
  if (i > 0) await clearRunRows(oursUrl)
  return oursThroughput(cfg, oursUrl, server, `ours: throughput, ${cfg.preFinishedRows.toLocaleString()} finished rows${runLabel(i)}`)
}, jobsPerSec)
await server.stop()
const oursShapesResult = await oursShapes(cfg, oursUrl)
step(`  ours: /metrics scrape time with ${cfg.preFinishedRows.toLocaleString()} finished rows`)
const oursScrape = await measureScrape({ databaseUrl: oursUrl, finishedRows: cfg.preFinishedRows, samples: cfg.quick ? 20 : 200 })
step(`  ours: /metrics scrape p50 ${oursScrape.p50Ms} ms, p99 ${oursScrape.p99Ms} ms, max ${oursScrape.maxMs} ms`)
step(`  ours: exactly-once sends against anvil, ${cfg.sendsPerWallet} per wallet`)
const oursSends = await measureSends(cfg.sendsPerWallet)
step(`  ours: sends ${oursSends.oneWallet.sendsPerSec}/s from one wallet, ${oursSends.fourWallets.sendsPerSec}/s from four`)

step('3/4 graphile-worker')
const gUrl = await prepareGraphileDb()
const gBulk = await graphileBulkSubmit(cfg, gUrl)
const gDefault = await graphileThroughput(cfg, gUrl, GRAPHILE_DEFAULT, 'graphile-worker default: throughput')
const gBest = await bestOf(cfg.throughputRuns, (i) => graphileThroughput(cfg, gUrl, GRAPHILE_BEST, `graphile-worker best: throughput${runLabel(i)}`), jobsPerSec)
const gLatDefault = await graphileLatency(cfg, gUrl, GRAPHILE_DEFAULT, 'graphile-worker default: pickup latency', {
  windowMs: cfg.idleWindowMs,
  settleMs: cfg.idleSettleMs,
})
const gLatBest = await graphileLatency(cfg, gUrl, GRAPHILE_BEST, 'graphile-worker best: pickup latency')
const gShapes = await graphileShapes(cfg, gUrl, oursShapesResult.ioBound.jobs)

step('4/4 pg-boss')
const bUrl = await preparePgBossDb()
const bBulk = await pgbossBulkSubmit(cfg, bUrl)
const bDefault = await pgbossThroughput(cfg, bUrl, PGBOSS_DEFAULT, 'pg-boss default: throughput', cfg.slowDefaultCapMs)
const bBest = await bestOf(cfg.throughputRuns, (i) => pgbossThroughput(cfg, bUrl, PGBOSS_BEST, `pg-boss best: throughput${runLabel(i)}`), jobsPerSec)
const bShapes = await pgbossShapes(cfg, bUrl, oursShapesResult.ioBound.jobs)

const results = summarizeResults({
  cfg,
  command,
  startedAt: startedAt.toISOString(),
  durationSeconds: Math.round((performance.now() - t0) / 100) / 10,
  machine: { ...machine, loadAvgAtEnd: Math.round((loadavg()[0] ?? 0) * 100) / 100 },
  raw,
  ours: { bulk: oursBulk, empty: oursEmpty, scale: oursScale, idle: oursIdle, latency: oursLat, shapes: oursShapesResult, scrape: oursScrape, sends: oursSends },
  graphile: { bulk: gBulk, default: gDefault, best: gBest, latencyDefault: gLatDefault, latencyBest: gLatBest.latency, shapes: gShapes },
  pgboss: { bulk: bBulk, default: bDefault, best: bBest, shapes: bShapes },
})

mkdirSync(new URL('./results/', import.meta.url), { recursive: true })
writeFileSync(new URL('./results/latest.json', import.meta.url), `${JSON.stringify(results.json, null, 2)}\n`)
writeFileSync(new URL('./results/latest.md', import.meta.url), `${results.markdown}\n`)
step(`done in ${results.json.durationSeconds} s; wrote bench/results/latest.json and latest.md`)
if (process.argv.includes('--update-readme')) {
  updateReadme(new URL('./README.md', import.meta.url), results.markdown)
  step('updated the results section of bench/README.md')
}
console.log(results.markdown)
console.log()
console.log(JSON.stringify(results.json, null, 2))
const incomplete = results.json.incomplete as string[]
if (incomplete.length > 0) {
  step(`incomplete: ${incomplete.join('; ')}`)
  process.exit(1)
}
process.exit(0)
