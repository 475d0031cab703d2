import type { ChaosConfig } from '../config'
import { type ScenarioContext, say } from '../context'
import { readJobs, readRuns, runsSettled } from '../history'
import { cronTicks, noOverlaps, onlyKilledProcessesDied, rerunsExplained } from '../verdicts'
import type { ScenarioResult } from './kills'

const CRON = '* * * * * *'

async function runningTickServer(ctx: ScenarioContext, timeoutMs: number): Promise<string | null> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    const [open] = await ctx.sql`SELECT server FROM chaos_runs WHERE ended_at IS NULL ORDER BY run_id DESC LIMIT 1`
    if (open) return open.server as string
    await Bun.sleep(20)
  }
  return null
}

/**
 * Scenario 3: three servers (2 children each) on one database run a per-second cron of the recorder type;
 * halfway through, the server running the tick at that moment is SIGKILLed whole and started again.
 */
export async function manyInstances(cfg: ChaosConfig, ctx: ScenarioContext): Promise<ScenarioResult> {
  const t0 = Date.now()
  const servers = [await ctx.startServer('S1'), await ctx.startServer('S2'), await ctx.startServer('S3')]
  // Each tick holds for 400 ms, so there is a moment when one server is running it.
  const cron = await ctx.submitter.submitJob({ type: 'chaosRecord', cronSchedule: CRON, data: { ms: 400, batch: 'cron-instances' } })
  const from = Date.now() + 1000
  await Bun.sleep(cfg.instancesMs / 2)
  // The kill that hurts most: the server running the tick right now. Its lease has to run out before
  // another server may run the row again, and the gap that leaves is what the cron verdict must explain.
  const holder = await runningTickServer(ctx, 10_000)
  const victim = servers.find((s) => s.name === holder) ?? servers[1]!
  say(`  instances: SIGKILL ${victim.name} whole, then start it again`)
  ctx.killServer(victim)
  await victim.exited()
  await Bun.sleep(3000)
  await victim.start()
  await victim.waitReady()
  await Bun.sleep(cfg.instancesMs / 2)
  const to = Date.now()
  const killed = ctx.events.killedAt()
  await runsSettled(ctx.sql, new Set(killed.keys()))
  const runs = await readRuns(ctx.sql, t0)
  const cronJobs = await readJobs(ctx.sql, ctx.sql`type = 'chaosRecord' AND cron_schedule = ${CRON} AND id >= ${cron.id}`)
  const slack = { leaseMs: cfg.leaseMs }
  const health = await Promise.all(servers.map(async (s) => (await s.health()).status === 200 && s.children().length === 2))
  const survivorsOk = servers.filter((s) => s !== victim).every((s) => s.mains.length === 1 && s.alive)
  const ranOn = new Set(runs.map((r) => r.server))
  return {
    name: 'three instances (scenario 3)',
    verdicts: [
      cronTicks([...cronJobs.values()], runs, ctx.events.events, { from, to }, slack),
      noOverlaps(runs, killed),
        onlyKilledProcessesDied(
          ctx.servers.flatMap((s) => s.childExits()),
          killed,
        ),
      rerunsExplained(runs, ctx.events.events, killed, slack),
      {
        name: 'the other servers stay up; the killed one comes back',
        ok: survivorsOk && victim.alive && health.every(Boolean),
        figure: `survivors one process each throughout: ${survivorsOk}; ${victim.name} restarted and up: ${victim.alive}; /health 200 with 2 children: ${health.filter(Boolean).length}/3; cron ran on ${[...ranOn].sort().join(', ')}`,
      },
    ],
    figures: { servers: 3, seconds: Math.round((to - t0) / 1000), serverKills: 1 },
  }
}
