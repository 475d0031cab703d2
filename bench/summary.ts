import { readFileSync, writeFileSync } from 'node:fs'
import type { BenchConfig } from './config'
import type { IdleLoad } from './idle'
import type { LatencyResult } from './latency'
import type { ScrapeTimes } from './metricsScrape'
import type { MachineInfo } from './machine'
import type { IdleCost } from './ours'
import type { RawResult } from './raw'
import type { PeerShapes } from './peers/shapes'
import type { SendRate } from './sends'
import type { ShapesResult } from './shapes'
import { markdownTable, type Row, row, type Target, targetsTable } from './report'
import { round } from './stats'
import type { ThroughputResult } from './throughput'

type Bulk = { jobs: number; seconds: number; jobsPerSec: number }

export interface RunData {
  cfg: BenchConfig
  command: string
  startedAt: string
  durationSeconds: number
  machine: MachineInfo & { loadAvgAtEnd: number }
  raw: RawResult
  ours: { bulk: Bulk; empty: ThroughputResult & { verified: boolean }; scale: ThroughputResult & { verified: boolean }; idle: IdleCost; latency: LatencyResult; shapes: ShapesResult; scrape: ScrapeTimes; sends: { oneWallet: SendRate; fourWallets: SendRate } }
  graphile: {
    bulk: Bulk
    default: ThroughputResult
    best: ThroughputResult
    latencyDefault: { latency: LatencyResult; idle?: IdleLoad; idleRssMb?: number }
    latencyBest: LatencyResult
    shapes: PeerShapes
  }
  pgboss: { bulk: Bulk; default: ThroughputResult; best: ThroughputResult; shapes: PeerShapes }
}

const maxOf = (m: Record<string, number>) => Math.max(...Object.values(m))
const capNote = (t: ThroughputResult) => (t.capped ? `capped after ${t.seconds} s, ${t.finished.toLocaleString()} jobs done` : undefined)

/** The comparison rows, the targets from the issue, and everything as one JSON document. */
export function summarizeResults(d: RunData): { json: Record<string, any>; markdown: string } {
  const o = d.ours
  const g = d.graphile
  const gl = g.latencyDefault.latency
  const oursBusyRss = maxOf(o.empty.busyRssMb)
  const oursIdleRss = maxOf(o.idle.idleRssMb)
  const tp = (peer: string, t: ThroughputResult): Row =>
    row({ scenario: `Throughput, ${d.cfg.jobs.toLocaleString()} no-op jobs`, unit: 'jobs/s', better: 'higher', ours: o.empty.jobsPerSec, peer, peerValue: t.jobsPerSec, note: capNote(t) })
  const lat = (p: 'p50' | 'p95' | 'p99', peer: string, l: LatencyResult): Row =>
    row({ scenario: `Pickup latency ${p}`, unit: 'ms', better: 'lower', ours: o.latency[p], peer, peerValue: l[p] })
  const rows: Row[] = [
    tp('graphile-worker, default', g.default),
    tp('graphile-worker, best (concurrency 10, localQueue 500, completeJobBatchDelay 0)', g.best),
    tp('pg-boss, default', d.pgboss.default),
    tp('pg-boss, best (batchSize 100, burstWhenBatchFull, localConcurrency 4)', d.pgboss.best),
    row({ scenario: 'Throughput vs the raw limit', unit: 'jobs/s', better: 'higher', ours: o.empty.jobsPerSec, peer: 'raw Postgres: pgbench, 2 clients, claim+finish batches of 250', peerValue: d.raw.rowsPerSec }),
    row({ scenario: `Throughput with ${d.cfg.preFinishedRows.toLocaleString()} finished rows`, unit: 'jobs/s', better: 'higher', ours: o.scale.jobsPerSec, peer: 'ours, empty table', peerValue: o.empty.jobsPerSec }),
    lat('p50', 'graphile-worker, default', gl),
    lat('p95', 'graphile-worker, default', gl),
    lat('p99', 'graphile-worker, default', gl),
    lat('p50', 'graphile-worker, best', g.latencyBest),
    lat('p99', 'graphile-worker, best', g.latencyBest),
    row({ scenario: 'Pickup after the submit call returned, p50', unit: 'ms', better: 'lower', ours: o.latency.beyondSubmit.p50, peer: 'graphile-worker, best', peerValue: g.latencyBest.beyondSubmit.p50 }),
    row({ scenario: 'Pickup after the submit call returned, p99', unit: 'ms', better: 'lower', ours: o.latency.beyondSubmit.p99, peer: 'graphile-worker, best', peerValue: g.latencyBest.beyondSubmit.p99 }),
    row({ scenario: 'Bulk submit (submitJobs, 10k per call)', unit: 'jobs/s', better: 'higher', ours: o.bulk.jobsPerSec, peer: 'graphile-worker addJobs', peerValue: g.bulk.jobsPerSec }),
    row({ scenario: 'Bulk submit (submitJobs, 10k per call)', unit: 'jobs/s', better: 'higher', ours: o.bulk.jobsPerSec, peer: 'pg-boss insert', peerValue: d.pgboss.bulk.jobsPerSec }),
    row({ scenario: 'RSS while busy, largest child', unit: 'MB', better: 'lower', ours: oursBusyRss, peer: 'graphile-worker best, its process', peerValue: maxOf(g.best.busyRssMb) }),
    row({ scenario: 'RSS while idle, largest child', unit: 'MB', better: 'lower', ours: oursIdleRss, peer: 'graphile-worker default, its process', peerValue: g.latencyDefault.idleRssMb ?? null }),
    row({ scenario: 'Idle database load per child', unit: 'transactions/s', better: 'lower', ours: o.idle.perSecondPerChild, peer: 'graphile-worker default, its process', peerValue: g.latencyDefault.idle?.perSecond ?? null }),
  ]
  const sh = o.shapes
  rows.push(
    row({ scenario: `I/O-bound: ${sh.ioBound.jobs.toLocaleString()} jobs of 100 ms`, unit: 'jobs/s', better: 'higher', ours: sh.ioBound.jobsPerSec, peer: `the ceiling of its ${sh.ioBound.ceilingJobsPerSec / 10} slots`, peerValue: sh.ioBound.ceilingJobsPerSec }),
    row({ scenario: `I/O-bound: ${sh.ioBound.jobs.toLocaleString()} jobs of 100 ms`, unit: 'jobs/s', better: 'higher', ours: sh.ioBound.jobsPerSec, peer: `graphile-worker, concurrency ${sh.ioBound.ceilingJobsPerSec / 10}, localQueue as deep`, peerValue: g.shapes.ioBound.jobsPerSec, note: capNote(g.shapes.ioBound) }),
    row({ scenario: `I/O-bound: ${sh.ioBound.jobs.toLocaleString()} jobs of 100 ms`, unit: 'jobs/s', better: 'higher', ours: sh.ioBound.jobsPerSec, peer: `pg-boss, batchSize 100 x localConcurrency ${sh.ioBound.ceilingJobsPerSec / 1000}`, peerValue: d.pgboss.shapes.ioBound.jobsPerSec, note: capNote(d.pgboss.shapes.ioBound) }),
    row({ scenario: 'Priority -1 probe under that backlog: start after submit p99', unit: 'ms', better: 'lower', ours: sh.priority.high.p99, peer: 'ours, the same probe at priority 0', peerValue: sh.priority.control.p99 }),
    row({ scenario: 'High-priority probe under that backlog: start after submit p99', unit: 'ms', better: 'lower', ours: sh.priority.high.p99, peer: 'graphile-worker, priority -1 (same configuration)', peerValue: g.shapes.priority.p99 }),
    row({ scenario: 'High-priority probe under that backlog: start after submit p99', unit: 'ms', better: 'lower', ours: sh.priority.high.p99, peer: 'pg-boss, priority 1 in the same queue', peerValue: d.pgboss.shapes.priority.p99 }),
    row({ scenario: 'Concurrency-1 type (5 ms jobs) inside a no-op flood', unit: 'jobs/s', better: 'higher', ours: sh.limited.inFloodJobsPerSec, peer: 'ours, the same type alone', peerValue: sh.limited.aloneJobsPerSec }),
    row({ scenario: 'Exactly-once sends (anvil, automine), four wallets', unit: 'sends/s', better: 'higher', ours: o.sends.fourWallets.sendsPerSec, peer: 'ours, one wallet (its sends one at a time)', peerValue: o.sends.oneWallet.sendsPerSec, note: `${o.sends.oneWallet.msPerSendPerWallet} ms per send from one wallet; no peer has a durable sender` }),
    row({ scenario: 'No-op flood with a concurrency-1 type mixed in', unit: 'jobs/s', better: 'higher', ours: sh.limited.floodWithLimitedJobsPerSec, peer: 'ours, the flood alone (same server)', peerValue: sh.limited.floodAloneJobsPerSec }),
  )
  const bestPeerLat = { p50: Math.min(gl.p50, g.latencyBest.p50), p99: Math.min(gl.p99, g.latencyBest.p99) }
  const x = (a: number, b: number) => `${round(a / b, 2)}x`
  const targets: Target[] = [
    { target: 'Throughput >= 2x graphile-worker best', actual: `${o.empty.jobsPerSec} vs ${g.best.jobsPerSec} jobs/s = ${x(o.empty.jobsPerSec, g.best.jobsPerSec)}`, met: o.empty.jobsPerSec >= 2 * g.best.jobsPerSec },
    { target: 'Throughput >= 3x pg-boss best', actual: `${o.empty.jobsPerSec} vs ${d.pgboss.best.jobsPerSec} jobs/s = ${x(o.empty.jobsPerSec, d.pgboss.best.jobsPerSec)}`, met: o.empty.jobsPerSec >= 3 * d.pgboss.best.jobsPerSec },
    { target: 'Throughput >= 0.5x the raw limit', actual: `${o.empty.jobsPerSec} vs ${d.raw.rowsPerSec} rows/s = ${x(o.empty.jobsPerSec, d.raw.rowsPerSec)}`, met: o.empty.jobsPerSec >= 0.5 * d.raw.rowsPerSec },
    { target: 'Full row lifecycle on every row (started, finished, success, result, remove_at)', actual: o.empty.verified && o.scale.verified ? 'all rows' : 'missing on some rows', met: o.empty.verified && o.scale.verified },
    { target: 'Pickup latency p50 <= 2 ms', actual: `${o.latency.p50} ms`, met: o.latency.p50 <= 2 },
    { target: 'Pickup latency p99 <= 10 ms', actual: `${o.latency.p99} ms`, met: o.latency.p99 <= 10 },
    { target: "Pickup latency below graphile-worker's (p50 and p99, its better config)", actual: `p50 ${o.latency.p50} vs ${bestPeerLat.p50} ms, p99 ${o.latency.p99} vs ${bestPeerLat.p99} ms`, met: o.latency.p50 < bestPeerLat.p50 && o.latency.p99 < bestPeerLat.p99 },
    { target: 'Pickup after the submit call returned: p50 <= 0.5 ms', actual: `${o.latency.beyondSubmit.p50} ms (p99 ${o.latency.beyondSubmit.p99} ms)`, met: o.latency.beyondSubmit.p50 <= 0.5 },
    { target: 'Scale: with finished rows >= 0.9x the empty-table throughput', actual: `${o.scale.jobsPerSec} vs ${o.empty.jobsPerSec} jobs/s = ${x(o.scale.jobsPerSec, o.empty.jobsPerSec)}`, met: o.scale.jobsPerSec >= 0.9 * o.empty.jobsPerSec },
    { target: 'Bulk submit >= 100,000 jobs/s', actual: `${o.bulk.jobsPerSec} jobs/s`, met: o.bulk.jobsPerSec >= 100_000 },
    { target: 'Each child RSS <= 80 MB (busy and idle)', actual: `busy ${oursBusyRss} MB, idle ${oursIdleRss} MB`, met: oursBusyRss <= 80 && oursIdleRss <= 80 },
    { target: 'I/O-bound: >= 90% of the ceiling the slots allow', actual: `${sh.ioBound.jobsPerSec} of ${sh.ioBound.ceilingJobsPerSec} jobs/s = ${round(sh.ioBound.ofCeiling * 100, 1)}%`, met: sh.ioBound.ofCeiling >= 0.9 },
    {
      target: 'I/O-bound: >= 2x each peer at the same total concurrency',
      actual: `${sh.ioBound.jobsPerSec} vs graphile-worker ${g.shapes.ioBound.jobsPerSec} (${x(sh.ioBound.jobsPerSec, g.shapes.ioBound.jobsPerSec)}), pg-boss ${d.pgboss.shapes.ioBound.jobsPerSec} (${x(sh.ioBound.jobsPerSec, d.pgboss.shapes.ioBound.jobsPerSec)}) jobs/s`,
      met: sh.ioBound.jobsPerSec >= 2 * Math.max(g.shapes.ioBound.jobsPerSec, d.pgboss.shapes.ioBound.jobsPerSec),
    },
    { target: 'Priority under load: start lateness p99 <= 50 ms', actual: `p99 ${sh.priority.high.p99} ms (priority 0: ${sh.priority.control.p99} ms)`, met: sh.priority.high.p99 <= 50 },
    { target: 'Limited type inside a flood: >= 90% of its rate alone', actual: `${sh.limited.inFloodJobsPerSec} vs ${sh.limited.aloneJobsPerSec} jobs/s = ${x(sh.limited.inFloodJobsPerSec, sh.limited.aloneJobsPerSec)}`, met: sh.limited.inFloodJobsPerSec >= 0.9 * sh.limited.aloneJobsPerSec },
    { target: 'The flood loses <= 10% to the limited type', actual: `${sh.limited.floodWithLimitedJobsPerSec} vs ${sh.limited.floodAloneJobsPerSec} jobs/s = ${x(sh.limited.floodWithLimitedJobsPerSec, sh.limited.floodAloneJobsPerSec)}`, met: sh.limited.floodWithLimitedJobsPerSec >= 0.9 * sh.limited.floodAloneJobsPerSec },
    {
      target: `GET /metrics with ${d.cfg.preFinishedRows.toLocaleString()} finished rows: every scrape < 20 ms`,
      actual: `p50 ${o.scrape.p50Ms} ms, p99 ${o.scrape.p99Ms} ms, max ${o.scrape.maxMs} ms`,
      met: o.scrape.maxMs < 20,
    },
    { target: 'Idle database load <= 1 query/s per child', actual: `${o.idle.perSecondPerChild} transactions/s per child (${o.idle.perSecond}/s total)`, met: o.idle.perSecondPerChild <= 1 },
  ]
  const incomplete: string[] = []
  for (const [name, t] of [['ours empty', o.empty], ['ours scale', o.scale]] as const) if (!t.capped && !t.verified) incomplete.push(`${name}: rows without the full lifecycle`)
  const probes = [['ours', o.latency], ['graphile default', gl], ['graphile best', g.latencyBest], ['ours priority probes', sh.priority.high], ['graphile-worker priority probes', g.shapes.priority], ['pg-boss priority probes', d.pgboss.shapes.priority]] as const
  for (const [name, l] of probes) if (l.samples === 0) incomplete.push(`${name}: no latency sample arrived`)
  const m = d.machine
  const header = [
    `## Results (${d.cfg.quick ? 'quick' : 'full'} run, ${d.startedAt})`,
    '',
    `Machine: ${m.cores} cores (${m.cpuModel}), ${m.memoryGb} GB, ${m.os}; PostgreSQL ${m.postgres}; Bun ${m.bun}. Load average ${m.loadAvgAtStart} at start, ${m.loadAvgAtEnd} at end.`,
    `Command: \`${d.command}\` (${d.durationSeconds} s). Ours: default configuration, WORKER_COUNT=2. ${d.cfg.jobs.toLocaleString()} jobs per throughput run, ${d.cfg.latencySamples.toLocaleString()} latency samples, ${d.cfg.preFinishedRows.toLocaleString()} pre-finished rows, ${d.cfg.idleWindowMs / 1000} s idle window.`,
    '',
    '',
  ].join('\n')
  const cpuRuns: [string, ThroughputResult][] = [
    ['ours, empty table', o.empty],
    ['ours, I/O-bound (100 ms jobs)', sh.ioBound],
    [`ours, ${d.cfg.preFinishedRows.toLocaleString()} finished rows`, o.scale],
    ['graphile-worker, default', g.default],
    ['graphile-worker, best', g.best],
    ['graphile-worker, I/O-bound', g.shapes.ioBound],
    ['pg-boss, default', d.pgboss.default],
    ['pg-boss, best', d.pgboss.best],
    ['pg-boss, I/O-bound', d.pgboss.shapes.ioBound],
  ]
  const cpuTable = [
    '| Throughput run | Jobs/s | Seconds | CPU s, system under test | CPU s, Postgres | CPU s, everything else | Machine busy |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...cpuRuns.map(([name, t]) => `| ${name} | ${t.jobsPerSec.toLocaleString('en-US')} | ${t.seconds} | ${t.cpu.systemSeconds} | ${t.cpu.postgresSeconds} | ${t.cpu.otherSeconds} | ${t.cpu.machineBusyPct}% |`),
  ].join('\n')
  const markdown = `${header}${markdownTable(rows)}\n\n### Targets\n\n${targetsTable(targets)}\n\n### Where the CPU went (${m.cores} cores; "everything else" is kernel time not charged to a process, such as softirq and I/O workers, plus the bench process and any other work on the machine)\n\n${cpuTable}\n`
  const json = {
    mode: d.cfg.quick ? 'quick' : 'full',
    command: d.command,
    startedAt: d.startedAt,
    durationSeconds: d.durationSeconds,
    machine: m,
    config: d.cfg,
    raw: d.raw,
    ours: d.ours,
    graphileWorker: d.graphile,
    pgBoss: d.pgboss,
    rows,
    targets,
    incomplete,
  }
  return { json, markdown }
}

const START = '<!-- results:start -->'
const END = '<!-- results:end -->'

/** Replaces what stands between the results markers of bench/README.md. */
export function updateReadme(path: URL, markdown: string): void {
  const text = readFileSync(path, 'utf8')
  const a = text.indexOf(START)
  const b = text.indexOf(END)
  if (a < 0 || b < a) throw new Error(`${path.pathname} has no ${START} … ${END} section`)
  writeFileSync(path, `${text.slice(0, a + START.length)}\n${markdown}\n${text.slice(b)}`)
}
