import { describe, expect, test } from 'bun:test'
import type { FaultEvent } from '../../chaos/events'
import { EventLog } from '../../chaos/events'
import { cronTicks, onlyKilledProcessesDied, everyJobFinished, type JobRow, memoryBounded, noOverlaps, oneAtATime, type RunRow, rerunsExplained } from '../../chaos/verdicts'

/**
 * The fault suite's verdicts are only worth their PASS if each one fails on the history it must reject.
 * These feed them made-up histories (times in ms from 0) and check both ways.
 */

const slack = { leaseMs: 10_000 }
const T = 1_800_000_000_000

function run(jobId: number, attempt: number, startedAt: number, endedAt: number | null, extra: Partial<RunRow> = {}): RunRow {
  return { jobId, attempt, server: 'A', pid: 100, due: T + startedAt, startedAt: T + startedAt, endedAt: endedAt === null ? null : T + endedAt, outcome: endedAt === null ? null : 'ok', lastError: null, ...extra }
}

const job = (id: number, extra: Partial<JobRow> = {}): JobRow => ({ id, finished: true, success: true, attempt: 1, createdAt: T, cronSchedule: null, ...extra })
const jobsMap = (...rows: JobRow[]) => new Map(rows.map((r) => [r.id, r]))
const kill = (at: number, pid: number, kind: FaultEvent['kind'] = 'child-kill', server = 'A'): FaultEvent => ({ kind, at: T + at, end: T + at, server, pids: [pid] })

describe('everyJobFinished', () => {
  test('holds when every submitted job succeeded', () => {
    expect(everyJobFinished([1, 2], jobsMap(job(1), job(2))).ok).toBe(true)
  })

  test('fails on a missing, an unfinished and a failed job, naming each', () => {
    const v = everyJobFinished([1, 2, 3, 4], jobsMap(job(1), job(2, { finished: false, success: null }), job(3, { success: false })))
    expect(v.ok).toBe(false)
    expect(v.missing).toEqual([4])
    expect(v.unfinished).toEqual([2])
    expect(v.failed).toEqual([3])
  })
})

describe('oneAtATime', () => {
  test('holds for runs of different jobs one after the other, and a killed run that died before the next began', () => {
    const runs = [run(1, 1, 0, 100), run(2, 1, 100, 200), run(3, 1, 300, null, { pid: 7 }), run(3, 2, 900, 950, { pid: 8 }), run(4, 1, 960, 990)]
    expect(oneAtATime(runs, new Map([[7, T + 800]])).ok).toBe(true)
  })

  test('fails when two jobs of the type run at once, even when a shorter run lies between them', () => {
    const v = oneAtATime([run(1, 1, 0, 1000), run(2, 1, 100, 150), run(3, 1, 500, 600)], new Map())
    expect(v.ok).toBe(false)
    expect(v.overlapping.map(([a, b]) => [a.jobId, b.jobId])).toEqual([
      [1, 2],
      [1, 3],
    ])
  })

  test('fails when a killed run died only after the next job began', () => {
    expect(oneAtATime([run(1, 1, 0, null, { pid: 7 }), run(2, 1, 400, 500, { pid: 8 })], new Map([[7, T + 450]])).ok).toBe(false)
  })
})

describe('noOverlaps', () => {
  test('holds for runs one after the other, and for a killed run that died before the rerun', () => {
    const runs = [run(1, 1, 0, 100), run(1, 2, 200, 300), run(2, 1, 0, null, { pid: 7 }), run(2, 2, 2000, 2100, { pid: 8 })]
    expect(noOverlaps(runs, new Map([[7, T + 500]])).ok).toBe(true)
  })

  test('fails when a rerun starts before the earlier run ended', () => {
    const v = noOverlaps([run(1, 1, 0, 500), run(1, 2, 400, 600, { pid: 101 })], new Map())
    expect(v.ok).toBe(false)
    expect(v.overlapping).toHaveLength(1)
  })

  test('fails when a killed run died only after its rerun began', () => {
    expect(noOverlaps([run(1, 1, 0, null, { pid: 7 }), run(1, 2, 400, 600, { pid: 8 })], new Map([[7, T + 1000]])).ok).toBe(false)
  })

  test('a run with no end whose process was never killed counts as still running', () => {
    expect(noOverlaps([run(1, 1, 0, null, { pid: 7 }), run(1, 2, 60_000, 60_100, { pid: 8 })], new Map()).ok).toBe(false)
  })

  test('compares every earlier run, not only the one just before', () => {
    const runs = [run(1, 1, 0, 10_000), run(1, 2, 100, 200, { pid: 2 }), run(1, 3, 300, 400, { pid: 3 })]
    expect(noOverlaps(runs, new Map()).overlapping).toHaveLength(2)
  })

  test('its figure names the first overlapping pair: job, attempts, servers and pids', () => {
    const v = noOverlaps([run(9, 1, 0, null, { pid: 7 }), run(9, 2, 400, 600, { pid: 8, server: 'B', lastError: 'lease expired' })], new Map([[7, T + 1000]]))
    expect(v.figure).toContain('job 9: attempt 1 on A pid 7')
    expect(v.figure).toContain('killed')
    expect(v.figure).toContain('attempt 2 on B pid 8')
    expect(v.figure).toContain('"lease expired"')
  })
})

describe('EventLog.killedAt', () => {
  test('a pid killed twice (a zombie not yet reaped) died at the first kill', () => {
    const log = new EventLog()
    log.add({ kind: 'child-kill', at: 100, end: 100, pids: [7] })
    log.add({ kind: 'server-kill', at: 5000, end: 5000, pids: [6, 7] })
    expect([...log.killedAt()]).toEqual([
      [7, 100],
      [6, 5000],
    ])
  })
})

describe('rerunsExplained', () => {
  test('a rerun after its process was killed is explained by the kill', () => {
    const v = rerunsExplained([run(1, 1, 0, null, { pid: 7 }), run(1, 2, 1500, 1600, { pid: 8 })], [kill(500, 7)], new Map([[7, T + 500]]), slack)
    expect(v.ok).toBe(true)
    expect(v.causes).toEqual({ 'child-kill': 1 })
  })

  test('a rerun with no fault anywhere is unexplained', () => {
    const v = rerunsExplained([run(1, 1, 0, 100), run(1, 2, 1500, 1600)], [], new Map(), slack)
    expect(v.ok).toBe(false)
    expect(v.unexplained).toHaveLength(1)
  })

  test('a run that ended but whose outcome was lost needs a database fault or its process dying after it', () => {
    const runs = [run(1, 1, 0, 100), run(1, 2, 1500, 1600)]
    const restart: FaultEvent = { kind: 'pg-restart-fast', at: T + 150, end: T + 1200 }
    expect(rerunsExplained(runs, [restart], new Map(), slack).ok).toBe(true)
    // A child killed elsewhere does not explain it.
    expect(rerunsExplained(runs, [kill(150, 999)], new Map([[999, T + 150]]), slack).ok).toBe(false)
    // Its own process killed after the handler returned does.
    expect(rerunsExplained(runs, [kill(150, 100)], new Map([[100, T + 150]]), slack).ok).toBe(true)
  })

  test('an attempt that left no record is explained only by the engine reason and a matching fault just before', () => {
    const rerun = run(1, 2, 3000, 3100, { pid: 8, lastError: 'interrupted: its worker process exited' })
    expect(rerunsExplained([rerun], [kill(2000, 7)], new Map([[7, T + 2000]]), slack).ok).toBe(true)
    // The reason says a child exited, but no child was killed.
    expect(rerunsExplained([rerun], [{ kind: 'partition', at: T + 1000, end: T + 2000, server: 'A' }], new Map(), slack).ok).toBe(false)
    // No reason recorded at all.
    expect(rerunsExplained([{ ...rerun, lastError: null }], [kill(2000, 7)], new Map([[7, T + 2000]]), slack).ok).toBe(false)
    // The kill happened long before (another incident).
    expect(rerunsExplained([rerun], [kill(-60_000, 7)], new Map([[7, T - 60_000]]), slack).ok).toBe(false)
  })

  test('that attempt is timed from its release (due - 1 s), so a rerun that waited behind a backlog is still explained', () => {
    // Released at 2.1 s (due 3.1 s), started only at 90 s.
    const late = run(1, 2, 90_000, 90_100, { pid: 8, due: T + 3100, lastError: 'interrupted: its worker process exited' })
    expect(rerunsExplained([late], [kill(2000, 7)], new Map([[7, T + 2000]]), slack).ok).toBe(true)
    // A kill after the release cannot have caused it, however close to the start.
    expect(rerunsExplained([late], [kill(89_000, 7)], new Map([[7, T + 89_000]]), slack).ok).toBe(false)
  })

  test('an aborted run needs a fault that takes leases away', () => {
    const runs = [run(1, 1, 0, 8000, { outcome: 'aborted: lease lost: not renewed for 8001 ms' }), run(1, 2, 11_000, 12_000, { server: 'B', pid: 9 })]
    expect(rerunsExplained(runs, [{ kind: 'partition', at: T + 100, end: T + 13_000, server: 'A' }], new Map(), slack).ok).toBe(true)
    expect(rerunsExplained(runs, [], new Map(), slack).ok).toBe(false)
  })
})

describe('cronTicks', () => {
  /** A per-second chain: row i due at second i, run 5 ms after. */
  function chain(seconds: number[]): { jobs: JobRow[]; runs: RunRow[] } {
    const jobs = seconds.map((s, i) => job(i + 1, { cronSchedule: '* * * * * *', createdAt: T + s * 1000 - 900 }))
    const runs = seconds.map((s, i) => ({ ...run(i + 1, 1, s * 1000 + 5, s * 1000 + 10), due: T + s * 1000 }))
    return { jobs, runs }
  }
  const window = { from: T, to: T + 10_000 }

  test('holds for one run a second', () => {
    const { jobs, runs } = chain([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    const v = cronTicks(jobs, runs, [], window, slack)
    expect(v.ok).toBe(true)
    expect(v.seen).toBe(10)
    expect(v.expected).toBe(10)
  })

  test('fails on two rows for one second', () => {
    const { jobs, runs } = chain([0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9])
    const v = cronTicks(jobs, runs, [], window, slack)
    expect(v.ok).toBe(false)
    expect(v.duplicates).toEqual([Math.floor(T / 1000) + 3])
  })

  test('fails on a gap no fault explains; holds when the database was away then', () => {
    const { jobs, runs } = chain([0, 1, 2, 6, 7, 8, 9])
    expect(cronTicks(jobs, runs, [], window, slack).ok).toBe(false)
    const v = cronTicks(jobs, runs, [{ kind: 'pg-restart-immediate', at: T + 2500, end: T + 5000 }], window, slack)
    expect(v.ok).toBe(true)
    expect(v.longest?.cause).toBe('pg-restart-immediate')
  })

  test('a gap at the start of the window looks at the tick just before the window', () => {
    // Ticks at -1 (interrupted and rerun, so its successor came late), then 3..9: seconds 0..2 are missing.
    const { jobs, runs } = chain([-1, 3, 4, 5, 6, 7, 8, 9])
    jobs[0]!.attempt = 2
    runs.splice(1, 0, { ...runs[0]!, attempt: 2, startedAt: T + 1500, endedAt: T + 1505, pid: 9 })
    runs[0] = { ...runs[0]!, endedAt: null }
    expect(cronTicks(jobs, runs, [], window, slack).ok).toBe(true)
    // Without the interruption before the window, the same gap is unexplained.
    const plain = chain([-1, 3, 4, 5, 6, 7, 8, 9])
    expect(cronTicks(plain.jobs, plain.runs, [], window, slack).ok).toBe(false)
  })

  test('a gap after a tick whose run was cut short is explained by that fault', () => {
    const { jobs, runs } = chain([0, 1, 2, 6, 7, 8, 9])
    jobs[2]!.attempt = 2
    runs.splice(3, 0, { ...runs[2]!, attempt: 2, startedAt: T + 4000, endedAt: T + 4005, pid: 9 })
    runs[2] = { ...runs[2]!, endedAt: null }
    const v = cronTicks(jobs, runs, [kill(2007, 100, 'server-kill')], window, slack)
    expect(v.ok).toBe(true)
    expect(v.longest?.cause).toContain('server-kill')
  })

  test('a gap at the end of the window counts', () => {
    const { jobs, runs } = chain([0, 1, 2, 3, 4])
    expect(cronTicks(jobs, runs, [], window, slack).ok).toBe(false)
  })

  test('no run at all fails', () => {
    expect(cronTicks([], [], [], window, slack).ok).toBe(false)
  })
})

describe('memoryBounded', () => {
  const bound = { main: 300, child: 200, growthMib: 20, minSpanMs: 10_000 }
  const series = (pid: number, role: 'main' | 'child', mib: (i: number) => number) =>
    Array.from({ length: 60 }, (_, i) => ({ at: T + i * 1000, pid, role, mib: mib(i) }))

  test('holds for flat processes under their bounds', () => {
    expect(memoryBounded([...series(1, 'main', () => 120), ...series(2, 'child', () => 90)], T, bound).ok).toBe(true)
  })

  test('fails on a process over its bound', () => {
    expect(memoryBounded(series(2, 'child', () => 250), T, bound).ok).toBe(false)
  })

  test('fails on steady growth, even under the bound', () => {
    const v = memoryBounded(series(1, 'main', (i) => 100 + i), T, bound)
    expect(v.ok).toBe(false)
    expect(v.growth).toBeGreaterThan(20)
  })

  test('ignores the warm-up', () => {
    expect(memoryBounded(series(1, 'main', (i) => (i < 10 ? 500 : 120)), T + 10_000, bound).ok).toBe(true)
  })
})

describe('onlyKilledProcessesDied', () => {
  const exit = (pid: number) => ({ server: 'A', pid, code: null, signal: 'SIGKILL' })
  test('holds when every exit is a pid the suite killed', () => {
    expect(onlyKilledProcessesDied([exit(7), exit(8)], new Map([[7, 1], [8, 2]])).ok).toBe(true)
  })

  test('fails on a child that died on its own, and names it', () => {
    const v = onlyKilledProcessesDied([exit(7), { server: 'B', pid: 9, code: 1, signal: null }], new Map([[7, 1]]))
    expect(v.ok).toBe(false)
    expect(v.figure).toContain('B pid 9 code 1')
  })
})
