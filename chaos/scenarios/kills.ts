import type { ChaosConfig } from '../config'
import { type ScenarioContext, say } from '../context'
import { readJobs, readRuns, runsSettled } from '../history'
import { streamJobs, untilFinished } from '../load'
import { sampleRss } from '../rss'
import { ADMIN_TOKEN, type ChaosServer } from '../servers'
import { cronTicks, everyJobFinished, memoryBounded, noOverlaps, oneAtATime, onlyKilledProcessesDied, rerunsExplained, type Verdict } from '../verdicts'

export interface ScenarioResult {
  name: string
  verdicts: Verdict[]
  /** Figures for docs/RELIABILITY.md beyond the verdicts'. */
  figures: Record<string, string | number>
}

const CRON = '* * * * * *'
/** Pairs of concurrency-1 jobs spread over the stream (see killsUnderLoad). */
const SERIAL_PAIRS = 60

/** The memory bounds the suite holds every process to once warm (MiB), stated in docs/RELIABILITY.md. */
export const RSS_BOUND = { main: 400, child: 350, growthMib: 40, minSpanMs: 20_000 }

/**
 * Scenarios 1, 5 and 7: two servers under a stream of recorder jobs (instant, 50 ms, 2 s) with a per-second
 * cron beside them. A random child is SIGKILLed every 2 s throughout; as the load goes on: the poison
 * (a hand-written bad cron row, an unstorable result, a submission refused halfway through its COPY),
 * Postgres restarted (fast), every worker connection terminated, Postgres restarted (immediate), and
 * server B SIGKILLed whole while A runs, then started again. The RSS of every process is sampled.
 */
export async function killsUnderLoad(cfg: ChaosConfig, ctx: ScenarioContext): Promise<ScenarioResult> {
  const t0 = Date.now()
  const a = await ctx.startServer('A')
  const b = await ctx.startServer('B')
  const rss = sampleRss(() => ctx.servers)
  const cron = await ctx.submitter.submitJob({ type: 'chaosRecord', cronSchedule: CRON, data: { batch: 'cron-kills' } })
  // A concurrency-1 type through every fault: due in pairs spread over the stream, so each pair's first
  // job is taken by a race of every worker of both servers, and its second by the hand-off of the first;
  // 150 ms each, so the child kills (every 2 s) often land on one of them.
  const streamMs = (cfg.jobs / cfg.jobsPerSecond) * 1000
  const serialIds = (
    await ctx.submitter.submitJobs(
      Array.from({ length: SERIAL_PAIRS * 2 }, (_, i) => ({
        type: 'chaosSerial',
        data: { ms: 150, batch: 'serial-kills' },
        due: new Date(Date.now() + Math.floor(i / 2) * (streamMs / SERIAL_PAIRS)),
      })),
    )
  ).map((j) => j.id)
  const cronFrom = Date.now() + 1500
  const killer = setInterval(() => ctx.killRandomChild(), cfg.childKillEveryMs)

  let submitted = 0
  const poison: Poison = { cron: 0, result: 0, copy: null }
  const plan: [number, string, () => Promise<unknown>][] = [
    [0.15, 'poison', async () => Object.assign(poison, await injectPoison(ctx, a))],
    [0.25, 'Postgres fast restart', () => ctx.restartPostgres('fast')],
    [0.4, 'terminate every worker connection', () => ctx.terminateBackends()],
    [0.55, 'Postgres immediate restart', () => ctx.restartPostgres('immediate')],
    [0.7, 'SIGKILL server B whole', () => killAndRestart(ctx, b)],
  ]
  let planDone = Promise.resolve()
  const ids = await streamJobs(ctx, {
    total: cfg.jobs,
    perSecond: cfg.jobsPerSecond,
    marker: 'kills',
    onProgress(n) {
      submitted = n
      while (plan.length > 0 && submitted >= plan[0]![0] * cfg.jobs) {
        const [, what, act] = plan.shift()!
        say(`  kills: ${what} (${submitted} submitted)`)
        // In the background: the stream goes on (and rides out the outage) while the fault plays out.
        planDone = planDone.then(act).then(() => {})
      }
    },
  })
  await planDone
  if (poison.result) ids.push(poison.result)
  ids.push(...serialIds)
  say(`  kills: all ${ids.length} submitted; waiting for them to finish`)
  const left = await untilFinished(ctx, ids, 180_000)
  const cronTo = Date.now()
  clearInterval(killer)
  say(`  kills: ${left} left unfinished; checking`)
  await until(() => ctx.comebacks.every((c) => c.backAt !== null || !serverOf(ctx, c.server).alive), 30_000)
  rss.stop()

  const killed = ctx.events.killedAt()
  await runsSettled(ctx.sql, new Set(killed.keys()))
  const runs = await readRuns(ctx.sql, t0)
  const jobs = await readJobs(ctx.sql, ctx.sql`id = ANY(${ids})`)
  const cronJobs = await readJobs(ctx.sql, ctx.sql`type = 'chaosRecord' AND cron_schedule = ${CRON} AND id >= ${cron.id}`)
  const slack = { leaseMs: cfg.leaseMs }
  const healthy = await Promise.all(ctx.servers.map(async (s) => (await s.health()).status === 200 && s.children().length === 2))
  const back = ctx.comebacks.filter((c) => c.backAt !== null)
  const slowest = Math.max(0, ...back.map((c) => c.backAt! - c.at))
  const serialSet = new Set(serialIds)
  const verdicts: Verdict[] = [
    everyJobFinished(ids, jobs),
    noOverlaps(runs, killed),
    oneAtATime(
      runs.filter((r) => serialSet.has(r.jobId)),
      killed,
    ),
    onlyKilledProcessesDied(
      ctx.servers.flatMap((s) => s.childExits()),
      killed,
    ),
    rerunsExplained(runs, ctx.events.events, killed, slack),
    cronTicks([...cronJobs.values()], runs, ctx.events.events, { from: cronFrom, to: cronTo }, slack),
    {
      name: 'servers stay up; every killed child comes back',
      ok: a.mains.length === 1 && a.alive && b.alive && healthy.every(Boolean) && back.length === ctx.comebacks.length,
      figure: `server A one process throughout: ${a.mains.length === 1 && a.alive}; B restarted and up: ${b.alive}; ${ctx.comebacks.length} child kills, ${back.length} came back (slowest ${slowest} ms); /health 200 with 2 children at the end: ${healthy.filter(Boolean).length}/${healthy.length}`,
    },
    await poisonVerdict(ctx, poison),
    memoryBounded(rss.samples, t0 + (Date.now() - t0) * 0.2, RSS_BOUND),
  ]
  return {
    name: 'kills under load (scenarios 1, 5, 7)',
    verdicts,
    figures: {
      jobs: ids.length,
      childKills: ctx.events.count('child-kill'),
      serverKills: ctx.events.count('server-kill'),
      postgresRestarts: ctx.events.count('pg-restart-fast') + ctx.events.count('pg-restart-immediate'),
      connectionTerminations: ctx.events.count('terminate-backends'),
      seconds: Math.round((Date.now() - t0) / 1000),
    },
  }
}

const serverOf = (ctx: ScenarioContext, name: string) => ctx.servers.find((s) => s.name === name)!

async function until(cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!cond() && Date.now() < deadline) await Bun.sleep(100)
}

async function killAndRestart(ctx: ScenarioContext, server: ChaosServer): Promise<void> {
  ctx.killServer(server)
  await server.exited()
  // Long enough that its leases expire and server A rescues its jobs.
  await Bun.sleep(3000)
  await server.start()
  await server.waitReady()
}

/**
 * Scenario 5: three poisons, each of which must fail alone: a cron row written by hand with a schedule
 * that has no next run, a job whose result Postgres cannot store as it is, and a bulk submission refused
 * halfway through its COPY (job 600 of 1,000 is invalid).
 */
async function injectPoison(ctx: ScenarioContext, server: ChaosServer) {
  const [bad] = await ctx.sql`
    INSERT INTO worker_jobs (type, data, cron_schedule) VALUES ('chaosRecord', ${ctx.sql.json({ batch: 'poison-cron' })}, 'garbage') RETURNING id`
  const result = await ctx.submitter.submitJob({ type: 'chaosRecord', data: { unstorable: true, batch: 'poison-result' } })
  const jobs = Array.from({ length: 1000 }, (_, i) => ({ type: 'chaosRecord', data: i === 600 ? { ms: -1, batch: 'poison-copy' } : { batch: 'poison-copy' } }))
  const res = await fetch(`${server.url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
    body: JSON.stringify({ query: 'mutation($jobs: [SubmitJobInput!]!) { submitJobs(jobs: $jobs) { id } }', variables: { jobs } }),
  })
  const body = (await res.json()) as { errors?: { extensions?: { code?: string; field?: string } }[] }
  const [rows] = await ctx.sql`SELECT count(*)::int AS n FROM worker_jobs WHERE data->>'batch' = 'poison-copy'`
  // A leaked connection stays idle in its transaction for good; under load a live one is there for a moment
  // between two statements, so only those idle in a transaction for over a second count.
  await Bun.sleep(1500)
  const [idle] = await ctx.sql`
    SELECT count(*)::int AS n FROM pg_stat_activity
    WHERE datname = 'chaos' AND state LIKE 'idle in transaction%' AND state_change < now() - interval '1 second'`
  return {
    cron: Number(bad!.id),
    result: result.id,
    copy: { code: body.errors?.[0]?.extensions?.code, field: body.errors?.[0]?.extensions?.field, rows: rows!.n as number, idleInTx: idle!.n as number },
  }
}

async function poisonVerdict(ctx: ScenarioContext, p: Poison): Promise<Verdict> {
  const [cron] = await ctx.sql`SELECT finished IS NOT NULL AS finished, success, result->>'error' AS error FROM worker_jobs WHERE id = ${p.cron}`
  const [successors] = await ctx.sql`SELECT count(*)::int AS n FROM worker_jobs WHERE cron_schedule = 'garbage' AND id <> ${p.cron}`
  const [stored] = await ctx.sql`SELECT success, result->>'text' AS text FROM worker_jobs WHERE id = ${p.result}`
  const cronOk = cron?.finished === true && cron.success === false && /cron/i.test(String(cron.error)) && successors!.n === 0
  const resultOk = stored?.success === true && String(stored.text).includes('\ufffd')
  const copyOk = p.copy?.code === 'BAD_USER_INPUT' && p.copy.field?.startsWith('jobs[600]') === true && p.copy.rows === 0 && p.copy.idleInTx === 0
  return {
    name: 'poison fails alone',
    ok: cronOk && resultOk && copyOk,
    figure: `bad cron row: ${cronOk ? `failed alone ("${String(cron!.error).slice(0, 60)}"), no successor` : `NOT handled (${JSON.stringify(cron)}, ${successors!.n} successors)`}; unstorable result: ${resultOk ? 'stored cleaned' : `NOT handled (${JSON.stringify(stored)})`}; COPY refused at job 600: ${copyOk ? `${p.copy!.code} naming ${p.copy!.field}, 0 rows, no connection left in a transaction` : `NOT handled (${JSON.stringify(p.copy)})`}`,
  }
}

interface Poison {
  cron: number
  result: number
  copy: null | { code?: string; field?: string; rows: number; idleInTx: number }
}
