import type { ChaosConfig } from '../config'
import { type ScenarioContext, say } from '../context'
import type { ScenarioResult } from './kills'

/**
 * Scenario 6: the server starts while Postgres is stopped. It must answer /health with 503, retry with
 * growing delays and say so in its log, come up by itself once Postgres is back, and never exit or print
 * a stack trace.
 */
export async function bootWithoutDatabase(_cfg: ChaosConfig, ctx: ScenarioContext): Promise<ScenarioResult> {
  const t0 = Date.now()
  await ctx.pg.stop('fast')
  const server = await ctx.startServer('D', { wait: false })
  const retries = () => server.logs().filter((l) => l.msg === 'database unreachable; retrying')
  const deadline = Date.now() + 30_000
  while (retries().length < 4 && Date.now() < deadline && server.alive) await Bun.sleep(100)
  const whileDown = await server.health()
  const seenDown = retries()
  say(`  boot without db: ${seenDown.length} retries logged; starting Postgres`)
  const back = Date.now()
  await ctx.pg.start()
  let readyMs: number | null = null
  try {
    await server.waitReady(60_000)
    readyMs = Date.now() - back
  } catch {}
  const logs = server.logs()
  const stack = logs.filter((l) => JSON.stringify(l).includes('    at ') || l.err?.stack)
  const delays = seenDown.map((l) => Number(l.retryInMs))
  const growing = delays.every((d, i) => i === 0 || d >= delays[i - 1]!)
  return {
    name: 'database away at boot (scenario 6)',
    verdicts: [
      {
        name: 'waits for the database, saying so, and comes up by itself',
        ok: server.alive && server.mains.length === 1 && seenDown.length >= 4 && growing && whileDown.status === 503 && readyMs !== null,
        figure: `${seenDown.length} retries logged with delays ${delays.join(', ')} ms; /health ${whileDown.status} meanwhile; ready ${readyMs} ms after Postgres was back; exited: ${!server.alive}`,
      },
      { name: 'no stack trace in its log', ok: stack.length === 0, figure: `${stack.length} lines with a stack out of ${logs.length}` },
    ],
    figures: { seconds: Math.round((Date.now() - t0) / 1000) },
  }
}
