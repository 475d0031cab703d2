import { DATABASE_FAULTS, type FaultEvent } from './events'

/**
 * The suite's verdicts, as pure functions of what was recorded: the jobs table, the recorder's runs
 * (chaos_runs) and the driver's fault log. tests/chaos/verdicts.test.ts feeds them made-up histories,
 * so each one is shown to fail on the history it must reject.
 */

export interface RunRow {
  jobId: number
  attempt: number
  server: string
  pid: number
  /** The job's due time when this run started (ms). */
  due: number
  startedAt: number
  /** null: the run never wrote its end (its process was killed). */
  endedAt: number | null
  /** 'ok', or 'aborted: <reason>' when the engine fired its signal. */
  outcome: string | null
  /** The job's last_error when this run began: the engine's reason for running it again (null on a first run). */
  lastError: string | null
}

export interface JobRow {
  id: number
  finished: boolean
  success: boolean | null
  attempt: number
  createdAt: number
  cronSchedule: string | null
}

export interface Verdict {
  name: string
  ok: boolean
  /** The figure the verdict rests on, printed beside it. */
  figure: string
}

/** How long after a fault its effects may still show: lease expiry, rescue tick, the 1 s rerun delay, retry backoff. */
export interface Slack {
  leaseMs: number
}

const slackMs = (s: Slack) => s.leaseMs + 5_000

/** Every submitted job is in the table, finished, and succeeded. */
export function everyJobFinished(submitted: readonly number[], jobs: ReadonlyMap<number, JobRow>): Verdict & { missing: number[]; unfinished: number[]; failed: number[] } {
  const missing: number[] = []
  const unfinished: number[] = []
  const failed: number[] = []
  for (const id of submitted) {
    const j = jobs.get(id)
    if (!j) missing.push(id)
    else if (!j.finished) unfinished.push(id)
    else if (j.success !== true) failed.push(id)
  }
  const ok = missing.length === 0 && unfinished.length === 0 && failed.length === 0
  return {
    name: 'every job finished, none lost',
    ok,
    figure: `${submitted.length} submitted, ${submitted.length - missing.length - unfinished.length - failed.length} succeeded, ${missing.length} missing, ${unfinished.length} not finished, ${failed.length} failed`,
    missing,
    unfinished,
    failed,
  }
}

/** A run's end as far as the record shows: its own, or its process's death; open (Infinity) otherwise. */
export function effectiveEnd(run: RunRow, killedAt: ReadonlyMap<number, number>): number {
  return run.endedAt ?? killedAt.get(run.pid) ?? Number.POSITIVE_INFINITY
}

function groupBy<T, K>(items: Iterable<T>, key: (item: T) => K): Map<K, T[]> {
  const out = new Map<K, T[]>()
  for (const item of items) {
    const k = key(item)
    const list = out.get(k)
    if (list) list.push(item)
    else out.set(k, [item])
  }
  return out
}

/** Each job's runs, in the order they started. */
function runsByJob(runs: readonly RunRow[]): Map<number, RunRow[]> {
  const out = groupBy(runs, (r) => r.jobId)
  for (const list of out.values()) list.sort((a, b) => a.startedAt - b.startedAt)
  return out
}

/** No two runs of one job overlap in time. A run with no end whose process was not killed counts as still going. */
export function noOverlaps(runs: readonly RunRow[], killedAt: ReadonlyMap<number, number>): Verdict & { overlapping: [RunRow, RunRow][] } {
  const overlapping: [RunRow, RunRow][] = []
  for (const list of runsByJob(runs).values()) {
    for (let i = 1; i < list.length; i++) {
      // Every earlier run must have ended before this one started, not only the one just before it.
      for (let k = 0; k < i; k++) {
        if (effectiveEnd(list[k]!, killedAt) > list[i]!.startedAt) overlapping.push([list[k]!, list[i]!])
      }
    }
  }
  return {
    name: 'no two runs of one job overlap',
    ok: overlapping.length === 0,
    figure: `${runs.length} runs, ${overlapping.length} overlapping pairs${overlapping.length > 0 ? `; first: ${describePair(overlapping[0]!, killedAt)}` : ''}`,
    overlapping,
  }
}

/**
 * The runs of a concurrency-1 type (`runs`, of any of its jobs) never overlap: each starts after every
 * earlier one ended, or after its process was killed.
 */
export function oneAtATime(runs: readonly RunRow[], killedAt: ReadonlyMap<number, number>): Verdict & { overlapping: [RunRow, RunRow][] } {
  const list = [...runs].sort((a, b) => a.startedAt - b.startedAt)
  const overlapping: [RunRow, RunRow][] = []
  // The latest end among the runs before each one: a run must start after all of them ended.
  let latest: RunRow | null = null
  for (const r of list) {
    if (latest && effectiveEnd(latest, killedAt) > r.startedAt) overlapping.push([latest, r])
    if (!latest || effectiveEnd(r, killedAt) > effectiveEnd(latest, killedAt)) latest = r
  }
  return {
    name: 'a concurrency-1 type never runs two jobs at once',
    ok: overlapping.length === 0,
    figure: `${runs.length} runs of ${new Set(runs.map((r) => r.jobId)).size} jobs, ${overlapping.length} overlapping${overlapping.length > 0 ? `; first: ${describePair(overlapping[0]!, killedAt)}` : ''}`,
    overlapping,
  }
}

/** No worker child died unless the suite killed it: a crash of its own is a defect, and would also hide behind the verdicts above. */
export function onlyKilledProcessesDied(
  exits: readonly { server: string; pid: number; code: number | null; signal: string | null }[],
  killedAt: ReadonlyMap<number, number>,
): Verdict {
  const unexpected = exits.filter((e) => !killedAt.has(e.pid))
  return {
    name: 'no worker died unless the suite killed it',
    ok: unexpected.length === 0,
    figure: `${exits.length} child exits, ${unexpected.length} not caused by the suite${unexpected
      .slice(0, 3)
      .map((e) => `; ${e.server} pid ${e.pid} code ${e.code} signal ${e.signal}`)
      .join('')}`,
  }
}

/** Enough of an overlapping pair to find both runs in the logs. */
function describePair([x, y]: [RunRow, RunRow], killedAt: ReadonlyMap<number, number>): string {
  const run = (r: RunRow) =>
    `attempt ${r.attempt} on ${r.server} pid ${r.pid} ${iso(r.startedAt)}..${r.endedAt === null ? `(no end${killedAt.has(r.pid) ? `, killed ${iso(killedAt.get(r.pid)!)}` : ''})` : iso(r.endedAt)} ${r.outcome ?? ''}`.trim()
  return `job ${x.jobId}: ${run(x)} / ${run(y)} (last_error ${JSON.stringify(y.lastError)})`
}

const iso = (ms: number) => new Date(ms).toISOString().slice(11, 23)

/** The faults that take a live worker's leases or outcomes away: the database gone, or its server cut off. */
function leaseFaultsAround(events: readonly FaultEvent[], server: string, from: number, to: number, slack: Slack): FaultEvent[] {
  return events.filter((e) => {
    const hitsIt = DATABASE_FAULTS.has(e.kind) || (e.kind === 'partition' && e.server === server)
    return hitsIt && e.at <= to && e.end + slackMs(slack) >= from
  })
}

/**
 * Why a job ran again after `prev`: the fault that cut `prev` short, or null when nothing explains it.
 *  - prev has no end: its process was killed (child or whole server);
 *  - prev was aborted: its lease was lost (a partition, a lost connection) or the server shut down;
 *  - prev ended but its outcome was never recorded: the database went away, or the process died, before
 *    the outcome was written.
 * `prev` null: the earlier attempt left no run record (its process was killed, or its lease lost, before
 * the recorder's first write landed). Then the engine's own reason (`next.lastError`, written by whoever
 * put the job back) must name the interruption, and a fault of that kind must have happened just before.
 */
export function rerunCause(
  prev: RunRow | null,
  next: RunRow,
  events: readonly FaultEvent[],
  killedAt: ReadonlyMap<number, number>,
  slack: Slack,
): string | null {
  if (!prev) return unrecordedCause(next, events, slack)
  const killed = killedAt.get(prev.pid)
  if (prev.endedAt === null) {
    if (killed === undefined) return null
    const e = events.find((x) => x.pids?.includes(prev.pid))
    return e?.kind ?? 'child-kill'
  }
  // Only a fault that takes leases away: a kill elsewhere does not make this worker give a job up.
  const around = leaseFaultsAround(events, prev.server, prev.startedAt, next.startedAt, slack)
  if (prev.outcome?.startsWith('aborted')) {
    const f = around[0]
    return f ? `${f.kind} (aborted: ${prev.outcome.includes('lease') ? 'lease lost' : 'signal'})` : null
  }
  // It ran to its end; the outcome was lost: its process died after, or the database went away.
  if (killed !== undefined && killed >= prev.endedAt - 1 && killed <= next.startedAt) {
    return `${events.find((x) => x.pids?.includes(prev.pid))?.kind ?? 'child-kill'} (outcome not yet written)`
  }
  const f = around[0]
  return f ? `${f.kind} (outcome not written)` : null
}

/** Every run beyond a job's first is explained by a fault that cut an earlier run short. */
export function rerunsExplained(
  runs: readonly RunRow[],
  events: readonly FaultEvent[],
  killedAt: ReadonlyMap<number, number>,
  slack: Slack,
): Verdict & { reruns: number; causes: Record<string, number>; unexplained: RunRow[] } {
  let reruns = 0
  const causes: Record<string, number> = {}
  const unexplained: RunRow[] = []
  for (const list of runsByJob(runs).values()) {
    for (let i = 0; i < list.length; i++) {
      const run = list[i]!
      const prev = i > 0 ? list[i - 1]! : null
      // The first recorded run is a rerun only when earlier attempts left no record.
      if (!prev && run.attempt === 1) continue
      // A gap in the attempts means an attempt in between left no record: explain that one.
      const missingBetween = prev ? run.attempt > prev.attempt + 1 : true
      reruns++
      const cause = rerunCause(missingBetween ? null : prev, run, events, killedAt, slack)
      if (cause) causes[cause] = (causes[cause] ?? 0) + 1
      else unexplained.push(run)
    }
  }
  const list = Object.entries(causes)
    .sort((a, b) => b[1] - a[1])
    .map(([c, n]) => `${c}: ${n}`)
    .join(', ')
  return {
    name: 'every rerun explained by a fault',
    ok: unexplained.length === 0,
    figure: `${reruns} reruns (${list || 'none'}), ${unexplained.length} unexplained${unexplained
      .slice(0, 3)
      .map((r) => `; job ${r.jobId} attempt ${r.attempt} on ${r.server} at ${iso(r.startedAt)}, due ${iso(r.due)}, last_error ${JSON.stringify(r.lastError)}`)
      .join('')}`,
    reruns,
    causes,
    unexplained,
  }
}

/**
 * The engine's reasons (rescue.ts, the manager and the worker loop) and the faults that cause each: a
 * child's exit is noticed by its own manager at once; an expired lease means a server that went silent
 * (killed whole, or cut off); a lease the worker itself gave up is a partition or a lost database.
 */
const REASONS: { pattern: RegExp; kinds: readonly FaultEvent['kind'][]; within: (s: Slack) => number }[] = [
  { pattern: /worker process exited/, kinds: ['child-kill'], within: () => 5_000 },
  { pattern: /lease expired/, kinds: ['server-kill', 'partition'], within: (s) => s.leaseMs + 5_000 },
  { pattern: /lease lost/, kinds: ['partition', 'pg-restart-fast', 'pg-restart-immediate', 'terminate-backends'], within: (s) => s.leaseMs + 5_000 },
]

/** An interrupted job goes back with due = the release + 1 s (queue/finish.ts), so its due dates the release. */
const RERUN_DELAY_MS = 1000

function unrecordedCause(next: RunRow, events: readonly FaultEvent[], slack: Slack): string | null {
  const reason = REASONS.find((r) => r.pattern.test(next.lastError ?? ''))
  if (!reason) return null
  // Timed from the release, not from the rerun's start: under a backlog the rerun may wait long after it.
  const releasedAt = next.due - RERUN_DELAY_MS
  const f = events.find((e) => reason.kinds.includes(e.kind) && e.at <= releasedAt + 50 && e.end + reason.within(slack) >= releasedAt)
  return f ? `${f.kind} (before the first write)` : null
}

export interface CronGap {
  /** The last tick that ran before the gap, and the first after it (epoch seconds). */
  after: number
  before: number
  cause: string | null
}

/**
 * A per-second cron: each row of the chain is one scheduled second (its due when its first attempt ran;
 * for a row whose first attempt left no record, the second after it was created, since a successor is
 * created during the second before it is due). Within [from, to): exactly one row per second that ran,
 * and every missing second explained: the row before the gap was interrupted (and rerun), or the database
 * was away, or the row's server was killed or cut off.
 */
export function cronTicks(
  cronJobs: readonly JobRow[],
  runs: readonly RunRow[],
  events: readonly FaultEvent[],
  window: { from: number; to: number },
  slack: Slack,
): Verdict & { expected: number; seen: number; duplicates: number[]; gaps: CronGap[]; longest: CronGap | null } {
  const byJob = runsByJob(runs)
  const ran = cronJobs.filter((j) => j.finished && j.success === true && (byJob.get(j.id)?.length ?? 0) > 0)
  const rowsBySecond = groupBy(ran, (j) => {
    const first = byJob.get(j.id)!.find((r) => r.attempt === 1)
    return first ? Math.floor(first.due / 1000) : Math.ceil(j.createdAt / 1000)
  })
  const fromS = Math.ceil(window.from / 1000)
  const toS = Math.floor(window.to / 1000)
  const duplicates: number[] = []
  const gaps: CronGap[] = []
  let seen = 0
  let lastSeen: number | null = null
  for (let s = fromS; s < toS; s++) {
    const rows = rowsBySecond.get(s)
    if (!rows) continue
    seen++
    if (rows.length > 1) duplicates.push(s)
    if (lastSeen !== null && s - lastSeen > 1) gaps.push({ after: lastSeen, before: s, cause: gapCause(lastSeen, s, rowsBySecond.get(lastSeen)!, byJob, events, slack) })
    lastSeen = s
  }
  // A window that ends (or starts) inside a gap is a gap too.
  const firstSeen = [...rowsBySecond.keys()].filter((s) => s >= fromS && s < toS).sort((a, b) => a - b)[0]
  if (firstSeen !== undefined && firstSeen > fromS + 1) gaps.unshift({ after: fromS - 1, before: firstSeen, cause: gapCause(fromS - 1, firstSeen, rowsBySecond.get(fromS - 1) ?? [], byJob, events, slack) })
  if (lastSeen !== null && toS - 1 - lastSeen > 1) gaps.push({ after: lastSeen, before: toS, cause: gapCause(lastSeen, toS, rowsBySecond.get(lastSeen)!, byJob, events, slack) })
  const expected = Math.max(0, toS - fromS)
  const longest = gaps.reduce<CronGap | null>((a, g) => (!a || g.before - g.after > a.before - a.after ? g : a), null)
  const unexplained = gaps.filter((g) => g.cause === null)
  const longestText = longest ? `, longest gap ${longest.before - longest.after - 1} s (${longest.cause ?? 'unexplained'})` : ''
  return {
    name: 'cron: one run per scheduled second, gaps only in fault windows',
    ok: duplicates.length === 0 && unexplained.length === 0 && seen > 0,
    figure: `${seen}/${expected} ticks, ${duplicates.length} duplicates, ${gaps.length} gaps (${unexplained.length} unexplained)${longestText}${unexplained
      .slice(0, 3)
      .map((g) => `; unexplained: no tick from ${iso((g.after + 1) * 1000).slice(0, 8)} to ${iso((g.before - 1) * 1000).slice(0, 8)}, the tick before it job ${rowsBySecond.get(g.after)?.map((j) => `${j.id} (attempt ${j.attempt})`).join(', ') ?? 'none'}`)
      .join('')}`,
    expected,
    seen,
    duplicates,
    gaps,
    longest,
  }
}

function gapCause(
  after: number,
  before: number,
  rowsBefore: readonly JobRow[],
  byJob: ReadonlyMap<number, RunRow[]>,
  events: readonly FaultEvent[],
  slack: Slack,
): string | null {
  // The row before the gap was interrupted and rerun: its successor came late.
  for (const j of rowsBefore) {
    const list = byJob.get(j.id) ?? []
    if (j.attempt > 1 || list.length > 1) {
      const servers = new Set(list.map((r) => r.server))
      const f = events.find((e) => (DATABASE_FAULTS.has(e.kind) || (e.server && servers.has(e.server))) && e.at <= before * 1000 && e.end + slackMs(slack) >= after * 1000)
      return f ? `${f.kind}, the tick's run was cut short` : 'the tick before it was interrupted and rerun'
    }
  }
  const f = events.find((e) => e.kind !== 'child-kill' && e.at <= before * 1000 && e.end + slackMs(slack) >= after * 1000)
  return f ? f.kind : null
}

export interface RssPoint {
  at: number
  role: 'main' | 'child'
  pid: number
  mib: number
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? 0 : s[Math.floor(s.length / 2)]!
}

/**
 * Once warm (samples from `warmFrom` on), every process stays under its role's bound, and no process
 * keeps growing: for each pid sampled over at least `minSpan` ms, the median of its last fifth is within
 * `growthMib` of the median of its second fifth.
 */
export function memoryBounded(
  samples: readonly RssPoint[],
  warmFrom: number,
  bound: { main: number; child: number; growthMib: number; minSpanMs: number },
): Verdict & { peak: { main: number; child: number }; growth: number } {
  const warm = samples.filter((s) => s.at >= warmFrom)
  const peak = { main: 0, child: 0 }
  for (const s of warm) peak[s.role] = Math.max(peak[s.role], s.mib)
  let growth = 0
  for (const list of groupBy(warm, (s) => s.pid).values()) {
    if (list.length < 10 || list.at(-1)!.at - list[0]!.at < bound.minSpanMs) continue
    const fifth = Math.floor(list.length / 5)
    const early = median(list.slice(fifth, 2 * fifth).map((s) => s.mib))
    const late = median(list.slice(-fifth).map((s) => s.mib))
    growth = Math.max(growth, late - early)
  }
  const ok = warm.length > 0 && peak.main <= bound.main && peak.child <= bound.child && growth <= bound.growthMib
  return {
    name: 'memory bounded once warm',
    ok,
    figure: `peak main ${peak.main.toFixed(0)} MiB (bound ${bound.main}), peak child ${peak.child.toFixed(0)} MiB (bound ${bound.child}), largest growth ${growth.toFixed(1)} MiB (bound ${bound.growthMib}), ${warm.length} samples`,
    peak,
    growth,
  }
}
