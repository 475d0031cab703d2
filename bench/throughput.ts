import { type CpuUse, cpuSince, cpuSnapshot } from './cpu'
import { sleep } from './db'
import { progressLine } from './progress'
import { rssMb } from './proc'
import { round } from './stats'

export interface ThroughputResult {
  jobs: number
  /** Jobs finished when the run ended (all of them unless capped). */
  finished: number
  seconds: number
  jobsPerSec: number
  /** True when the run hit its time cap before draining; the rate is then finished / cap. */
  capped: boolean
  /** Highest RSS (MB) seen for each sampled pid while the run was busy. */
  busyRssMb: Record<string, number>
  cpu: CpuUse
}

/**
 * One throughput run, the same protocol for every system: the workers are already up and idle; `insert`
 * commits all jobs in one transaction; the clock starts when that commit returns and stops at the start of
 * the first poll that finds no job left unfinished in the database.
 */
export async function measureThroughput(opts: {
  label: string
  jobs: number
  insert: () => Promise<void>
  /** Whether every job is finished in the database; polled every pollMs, so it must stop at the first unfinished row. */
  allFinished: () => Promise<boolean>
  /** Exact count of unfinished jobs: costs O(backlog), so only read for progress every progressMs and at the end. */
  remaining: () => Promise<number>
  capMs: number
  pollMs: number
  progressMs?: number
  /** The processes under test: their RSS is sampled and their CPU time accounted. */
  pids: readonly number[]
  /** Of those, the ones whose RSS is reported (default: all). */
  rssPids?: readonly number[]
}): Promise<ThroughputResult> {
  const line = progressLine()
  line.update(`${opts.label}: inserting ${opts.jobs.toLocaleString()} jobs`)
  await opts.insert()
  const cpu0 = cpuSnapshot(opts.pids)
  const t0 = performance.now()
  const busyRssMb: Record<string, number> = {}
  const progressMs = opts.progressMs ?? 2000
  let lastProgress = t0
  let end = 0
  let drained = false
  for (;;) {
    await sleep(opts.pollMs)
    for (const pid of opts.rssPids ?? opts.pids) {
      const r = rssMb(pid)
      if (r !== null) busyRssMb[pid] = Math.max(busyRssMb[pid] ?? 0, round(r, 1))
    }
    const polledAt = performance.now()
    if (await opts.allFinished()) {
      end = polledAt
      drained = true
      break
    }
    if (polledAt - t0 >= opts.capMs) {
      end = polledAt
      break
    }
    if (polledAt - lastProgress >= progressMs) {
      lastProgress = polledAt
      const done = opts.jobs - (await opts.remaining())
      const elapsed = (polledAt - t0) / 1000
      line.update(`${opts.label}: ${done.toLocaleString()}/${opts.jobs.toLocaleString()} finished, ${elapsed.toFixed(1)} s, ${Math.round(done / elapsed).toLocaleString()} jobs/s`)
    }
  }
  const seconds = (end - t0) / 1000
  const cpu = cpuSince(cpu0, opts.pids)
  const left = drained ? 0 : await opts.remaining()
  const finished = opts.jobs - Math.max(0, left)
  const result: ThroughputResult = {
    jobs: opts.jobs,
    finished,
    seconds: round(seconds, 3),
    jobsPerSec: round(finished / seconds, finished / seconds < 10 ? 2 : 0),
    capped: left > 0,
    busyRssMb,
    cpu,
  }
  line.done(
    `${opts.label}: ${result.jobsPerSec.toLocaleString()} jobs/s (${finished.toLocaleString()} jobs in ${result.seconds} s${result.capped ? ', capped' : ''}; CPU s: system ${cpu.systemSeconds}, postgres ${cpu.postgresSeconds}, other ${cpu.otherSeconds})`,
  )
  return result
}
