import { startTcpProxy } from '../../tests/helpers/tcpProxy'
import type { ChaosConfig } from '../config'
import { type ScenarioContext, say } from '../context'
import { readJobs, readRuns, runsSettled } from '../history'
import { untilFinished } from '../load'
import { cronTicks, everyJobFinished, noOverlaps, onlyKilledProcessesDied, type RunRow, rerunsExplained, type Verdict } from '../verdicts'
import type { ScenarioResult } from './kills'

const CRON = '* * * * * *'

/**
 * Scenario 2: server P reaches Postgres through the suite's TCP proxy, server A directly. P takes a set of
 * long jobs (and perhaps the cron), then the proxy stops forwarding without closing anything (a black
 * hole) for longer than the lease, and heals. P's runs must have been aborted before A ran those jobs again.
 */
export async function networkPartition(cfg: ChaosConfig, ctx: ScenarioContext): Promise<ScenarioResult> {
  const t0 = Date.now()
  const proxy = await startTcpProxy({ host: '127.0.0.1', port: ctx.pg.port })
  try {
    const p = await ctx.startServer('P', { databaseUrl: proxy.urlThrough(ctx.pg.url) })
    const holdMs = Math.round(cfg.leaseMs * 1.5)
    const long = await ctx.submitter.submitJobs(Array.from({ length: 40 }, () => ({ type: 'chaosRecord', data: { ms: holdMs, batch: 'partition' } })))
    const cron = await ctx.submitter.submitJob({ type: 'chaosRecord', cronSchedule: CRON, data: { batch: 'cron-partition' } })
    const ids = long.map((j) => j.id)
    await untilRunning(ctx, ids, 30_000)
    const a = await ctx.startServer('A')
    const cronFrom = Date.now()
    say(`  partition: P holds ${ids.length} jobs of ${holdMs} ms; black hole for ${cfg.partitionMs} ms`)
    const at = Date.now()
    proxy.blackhole('hold')
    await Bun.sleep(cfg.partitionMs)
    proxy.heal()
    const healed = Date.now()
    ctx.events.add({ kind: 'partition', at, end: healed, server: 'P' })
    // More jobs after the heal than A has slots (2 children × 250) at once: P must take its share again.
    const after = await ctx.submitter.submitJobs(Array.from({ length: 1500 }, () => ({ type: 'chaosRecord', data: { ms: 200, batch: 'partition-after' } })))
    ids.push(...after.map((j) => j.id))
    const left = await untilFinished(ctx, ids, 120_000)
    const cronTo = Date.now()
    say(`  partition: ${left} left unfinished; checking`)
    await runsSettled(ctx.sql, new Set())
    const runs = await readRuns(ctx.sql, t0)
    const jobs = await readJobs(ctx.sql, ctx.sql`id = ANY(${ids})`)
    const cronJobs = await readJobs(ctx.sql, ctx.sql`type = 'chaosRecord' AND cron_schedule = ${CRON} AND id >= ${cron.id}`)
    const killed = ctx.events.killedAt()
    const slack = { leaseMs: cfg.leaseMs }
    const pHealthy = (await p.health()).status === 200 && p.children().length === 2
    const pAfter = runs.filter((r) => r.server === 'P' && r.startedAt > healed).length
    return {
      name: 'network partition (scenario 2)',
      verdicts: [
        everyJobFinished(ids, jobs),
        noOverlaps(runs, killed),
        onlyKilledProcessesDied(
          ctx.servers.flatMap((s) => s.childExits()),
          killed,
        ),
        abortedBeforeRerun(runs, long.map((j) => j.id)),
        rerunsExplained(runs, ctx.events.events, killed, slack),
        cronTicks([...cronJobs.values()], runs, ctx.events.events, { from: cronFrom, to: cronTo }, slack),
        {
          name: 'both servers up after the heal; P works again',
          ok: p.mains.length === 1 && p.alive && a.alive && pHealthy && pAfter > 0,
          figure: `P one process throughout: ${p.mains.length === 1 && p.alive}, /health 200 with 2 children: ${pHealthy}, runs on P after the heal: ${pAfter}; A up: ${a.alive}`,
        },
      ],
      figures: { partitions: 1, partitionMs: healed - at, jobs: ids.length, seconds: Math.round((Date.now() - t0) / 1000) },
    }
  } finally {
    await ctx.close()
    await proxy.close()
  }
}

/** Until every id has a run record (they are running). */
async function untilRunning(ctx: ScenarioContext, ids: number[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    const [row] = await ctx.sql`SELECT count(DISTINCT job_id)::int AS n FROM chaos_runs WHERE job_id = ANY(${ids})`
    if (row!.n === ids.length) return
    await Bun.sleep(100)
  }
  throw new Error('the partitioned server did not start its jobs in time')
}

/** Each job P was running when cut off: its run there was aborted (and recorded so) before any rerun began. */
function abortedBeforeRerun(runs: readonly RunRow[], ids: readonly number[]): Verdict {
  let aborted = 0
  let rerunAfterAbort = 0
  const bad: string[] = []
  for (const id of ids) {
    const list = runs.filter((r) => r.jobId === id).sort((x, y) => x.startedAt - y.startedAt)
    const onP = list[0]
    const next = list[1]
    if (onP?.server !== 'P') {
      bad.push(`${id}: first run not on P`)
      continue
    }
    if (!onP.outcome?.startsWith('aborted') || onP.endedAt === null) {
      bad.push(`${id}: P's run ended ${onP.outcome ?? 'without an end'}`)
      continue
    }
    aborted++
    if (!next) bad.push(`${id}: never rerun`)
    else if (next.startedAt <= onP.endedAt) bad.push(`${id}: rerun on ${next.server} began ${onP.endedAt - next.startedAt} ms before P's run was aborted`)
    else rerunAfterAbort++
  }
  const leads = ids
    .map((id) => {
      const list = runs.filter((r) => r.jobId === id).sort((x, y) => x.startedAt - y.startedAt)
      return list[1] && list[0]?.endedAt ? list[1].startedAt - list[0].endedAt : null
    })
    .filter((x): x is number => x !== null)
  return {
    name: "the partitioned server's runs were aborted before another server reran them",
    ok: bad.length === 0,
    figure: `${aborted}/${ids.length} aborted on P, ${rerunAfterAbort} rerun after the abort (smallest lead ${Math.min(...leads)} ms)${bad.length ? `; ${bad.slice(0, 3).join('; ')}` : ''}`,
  }
}
