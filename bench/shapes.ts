import type postgres from 'postgres'
import { createDb } from '../src/server/db/client'
import { createSubmitter } from '../src/server/serverApp'
import { buildRegistry } from '../src/server/workers/jobs/registry'
import { jobs as benchJobs } from './benchJobs'
import type { BenchConfig } from './config'
import { connect, sleep } from './db'
import { type OursServer, resetOursTable, startOurs } from './ours'
import { openProbeReceiver, type ProbeData } from './probe'
import { progressLine, step } from './progress'
import { type LatencySummary, nowMs, round, summarize } from './stats'
import { measureThroughput, type ThroughputResult } from './throughput'

/**
 * The shapes a dapp server really runs (issue: scheduling controls), for our engine:
 * 1. I/O-bound: jobs that wait 100 ms on a timer, as on an RPC call. The ceiling is the slots the default
 *    configuration has (WORKER_COUNT x WORKER_CONCURRENCY) per 100 ms.
 * 2. Priority under load: the same backlog, and a probe job every 100 ms at priority -1 (and, as the
 *    control, at the default 0): how late each starts after its submit.
 * 3. A limited type (`concurrency: 1`, 5 ms jobs) alone, then inside a no-op flood: its rate must hold,
 *    and the flood's rate must barely move. Its rate inside the flood counts only the jobs that ran while
 *    the flood did (its backlog outlasts the flood): over first start to last finish, the jobs that ran
 *    after the flood, at the rate alone, made up most of the figure.
 */

/** WORKER_COUNT x the default WORKER_CONCURRENCY (src/server/config.ts), as startOurs runs it. */
export const OURS_SLOTS = 2 * 250
export const WAIT_MS = 100
const SERIAL_MS = 5

/** A system under the I/O-bound and priority shapes (ours, graphile-worker, pg-boss: peers/shapes.ts). */
export interface ShapeTarget {
  name: string
  /** Its worker processes, for CPU and RSS. */
  pids: readonly number[]
  /** Queues `n` jobs that each wait WAIT_MS, in one statement. */
  insertBacklog(n: number): Promise<void>
  /** Whether every one of those is finished: polled, so it stops at the first unfinished row. */
  drained(): Promise<boolean>
  /** How many of those are not finished yet (a count: for progress only). */
  remaining(): Promise<number>
  /** Submits one high-priority probe job (its handler reports its start over UDP, see probe.ts). */
  submitProbe(data: ProbeData): Promise<void>
}

export interface ShapesResult {
  ioBound: ThroughputResult & { ceilingJobsPerSec: number; ofCeiling: number }
  priority: { high: LatencySummary; control: LatencySummary; backlog: number }
  limited: { aloneJobsPerSec: number; inFloodJobsPerSec: number; floodAloneJobsPerSec: number; floodWithLimitedJobsPerSec: number }
}

const insertWaits = (sql: postgres.Sql, n: number) =>
  sql`INSERT INTO worker_jobs (type, user_id, due, data) SELECT 'wait', 0, now(), ${sql.json({ ms: WAIT_MS })} FROM generate_series(1, ${n})`

const allFinished = async (sql: postgres.Sql) => {
  const [row] = await sql`
    SELECT NOT EXISTS (SELECT 1 FROM worker_jobs WHERE started IS NULL AND finished IS NULL)
       AND NOT EXISTS (SELECT 1 FROM worker_jobs WHERE started IS NOT NULL AND finished IS NULL) AS done`
  return row?.done === true
}
const remaining = async (sql: postgres.Sql) =>
  Number((await sql`SELECT count(*) AS n FROM worker_jobs WHERE finished IS NULL`)[0]?.n)

export async function oursShapes(cfg: BenchConfig, url: string): Promise<ShapesResult> {
  const jobs = cfg.quick ? 5_000 : 50_000
  const sql = connect(url, 2)
  const handle = createDb(url, { max: 1, applicationName: 'bench submitter' })
  const submitter = createSubmitter(handle.db, buildRegistry(benchJobs))
  try {
    await resetOursTable(url)
    let server = await startOurs(url)
    const ours = (priority: number): ShapeTarget => ({
      name: 'ours',
      pids: [server.spawned.proc.pid, ...server.pids],
      insertBacklog: (n) => insertWaits(sql, n).then(() => {}),
      drained: async () => (await sql`SELECT 1 FROM worker_jobs WHERE type = 'wait' AND finished IS NULL LIMIT 1`).length === 0,
      remaining: () => remaining(sql),
      submitProbe: (data) => submitter.submitJob({ type: 'latencyProbe', priority, data }).then(() => {}),
    })
    const io = await ioBound(cfg, ours(-1), jobs, server.pids)
    const ceilingJobsPerSec = OURS_SLOTS / (WAIT_MS / 1000)
    const ioBoundResult = { ...io, ceilingJobsPerSec, ofCeiling: round(io.jobsPerSec / ceilingJobsPerSec, 3) }

    await resetOursTable(url)
    const high = await probeLateness(ours(-1), jobs, 'ours: priority -1 probes under an I/O backlog')
    await resetOursTable(url)
    const control = await probeLateness(ours(0), jobs, 'ours: priority 0 probes under the same backlog (control)')
    await server.stop()

    // The limited type needs its own server: registering it costs every worker a claim.
    await resetOursTable(url)
    server = await startOurs(url, { BENCH_LIMITED: 'true' })
    const serialJobs = cfg.quick ? 100 : 1_000
    const flood = cfg.quick ? 5_000 : 100_000
    const aloneJobsPerSec = await serialRate(sql, server, serialJobs, cfg)
    await resetOursTable(url)
    const floodAlone = await floodRate(sql, server, flood, 0, cfg, 'ours: no-op flood, limited type registered, none queued')
    await resetOursTable(url)
    const floodWithLimited = await floodRate(sql, server, flood, serialJobs, cfg, 'ours: no-op flood with a concurrency-1 type mixed in')
    const inFloodJobsPerSec = await serialRateDuringFlood(sql)
    await server.stop()
    step(
      `  ours: concurrency-1 type (${SERIAL_MS} ms jobs): ${aloneJobsPerSec} jobs/s alone, ${inFloodJobsPerSec} jobs/s inside the flood; flood ${floodAlone} -> ${floodWithLimited} jobs/s`,
    )
    return {
      ioBound: ioBoundResult,
      priority: { high, control, backlog: jobs },
      limited: { aloneJobsPerSec, inFloodJobsPerSec, floodAloneJobsPerSec: floodAlone, floodWithLimitedJobsPerSec: floodWithLimited },
    }
  } finally {
    await handle.close()
    await sql.end()
  }
}

/** `jobs` I/O-bound jobs queued at once, drained by the target's workers. */
export function ioBound(cfg: BenchConfig, target: ShapeTarget, jobs: number, rssPids?: readonly number[]): Promise<ThroughputResult> {
  return measureThroughput({
    label: `${target.name}: I/O-bound, ${jobs.toLocaleString()} jobs of ${WAIT_MS} ms`,
    jobs,
    capMs: cfg.throughputCapMs,
    pollMs: cfg.pollMs,
    pids: target.pids,
    ...(rssPids ? { rssPids } : {}),
    insert: () => target.insertBacklog(jobs),
    allFinished: () => target.drained(),
    remaining: () => target.remaining(),
  })
}

/**
 * Queues `backlog` I/O-bound jobs, then, while they drain, submits one probe every 100 ms at `priority`
 * and takes how long after its submit each started (the probe handler reports over UDP, see probe.ts).
 */
export async function probeLateness(target: ShapeTarget, backlog: number, label: string): Promise<LatencySummary> {
  const receiver = await openProbeReceiver()
  const line = progressLine()
  const samples: number[] = []
  try {
    await target.insertBacklog(backlog)
    const pending: Promise<void>[] = []
    for (let seq = 0; !(await target.drained()); seq++) {
      const t = nowMs()
      await target.submitProbe({ seq, t, port: receiver.port })
      pending.push(
        receiver.next(seq, 60_000).then((r) => {
          if (r) samples.push(r.startedAt - r.t)
        }),
      )
      if (seq % 10 === 0) line.update(`${label}: ${seq} probes`)
      await sleep(100)
    }
    await Promise.all(pending)
  } finally {
    receiver.close()
  }
  const s = summarize(samples)
  line.done(`${label}: ${s.samples} probes, start after submit p50 ${s.p50} ms, p99 ${s.p99} ms, max ${s.max} ms`)
  return s
}

/** `n` serial jobs queued at once, run alone: their rate from first start to last finish. */
async function serialRate(sql: postgres.Sql, server: OursServer, n: number, cfg: BenchConfig): Promise<number> {
  await measureThroughput({
    label: `ours: concurrency-1 type alone, ${n} jobs of ${SERIAL_MS} ms`,
    jobs: n,
    capMs: cfg.throughputCapMs,
    pollMs: cfg.pollMs,
    pids: [server.spawned.proc.pid, ...server.pids],
    insert: () => insertSerial(sql, n).then(() => {}),
    allFinished: () => allFinished(sql),
    remaining: () => remaining(sql),
  })
  return serialRateOfRows(sql)
}

const insertSerial = (sql: postgres.Sql, n: number) =>
  sql`INSERT INTO worker_jobs (type, user_id, due, data, concurrency_key)
      SELECT 'serial', 0, now(), ${sql.json({ ms: SERIAL_MS })}, '' FROM generate_series(1, ${n})`

/** The serial jobs' rate, from their rows: count over first start to last finish. */
async function serialRateOfRows(sql: postgres.Sql): Promise<number> {
  const [r] = await sql`
    SELECT count(*)::int AS n, extract(epoch FROM max(finished) - min(started))::float8 AS s FROM worker_jobs WHERE type = 'serial'`
  return round(Number(r!.n) / Number(r!.s), 1)
}

/**
 * The serial jobs' rate while the flood ran: those that started and finished between the flood's first
 * start and its last finish, over the span from the first of them to start to the last to finish.
 */
async function serialRateDuringFlood(sql: postgres.Sql): Promise<number> {
  const [r] = await sql`
    WITH flood AS (SELECT min(started) AS a, max(finished) AS b FROM worker_jobs WHERE type = 'noop'),
    inside AS (SELECT s.started, s.finished FROM worker_jobs AS s, flood WHERE s.type = 'serial' AND s.started >= flood.a AND s.finished <= flood.b)
    SELECT count(*)::int AS n, extract(epoch FROM max(finished) - min(started))::float8 AS s FROM inside`
  const n = Number(r!.n)
  if (n < 2) return 0
  return round(n / Number(r!.s), 1)
}

/** A no-op flood (with `serial` limited jobs queued beside it); the flood's own throughput. */
async function floodRate(sql: postgres.Sql, server: OursServer, n: number, serial: number, cfg: BenchConfig, label: string): Promise<number> {
  const res = await measureThroughput({
    label,
    jobs: n + serial,
    capMs: cfg.throughputCapMs,
    pollMs: cfg.pollMs,
    pids: [server.spawned.proc.pid, ...server.pids],
    insert: async () => {
      await sql.begin(async (tx) => {
        if (serial > 0) await insertSerial(tx as unknown as postgres.Sql, serial)
        await tx`INSERT INTO worker_jobs (type, user_id, due) SELECT 'noop', 0, now() FROM generate_series(1, ${n})`
      })
    },
    // The flood's end: its last no-op finished (the serial jobs may still be going).
    allFinished: async () => (await sql`SELECT 1 FROM worker_jobs WHERE type = 'noop' AND finished IS NULL LIMIT 1`).length === 0,
    remaining: async () => Number((await sql`SELECT count(*) AS n FROM worker_jobs WHERE type = 'noop' AND finished IS NULL`)[0]?.n) + serial,
  })
  if (serial > 0) {
    // What is left of the serial backlog after the flood is not measured: don't wait for it to run.
    await sql`DELETE FROM worker_jobs WHERE type = 'serial' AND started IS NULL`
    while (!(await allFinished(sql))) await sleep(cfg.pollMs)
  }
  return round((res.capped ? res.finished - serial : n) / res.seconds)
}

