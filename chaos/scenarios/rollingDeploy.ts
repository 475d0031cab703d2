import { createSubmitter } from '../../src/server/serverApp'
import { buildRegistry } from '../../src/server/workers/jobs/registry'
import type { ChaosConfig } from '../config'
import { type ScenarioContext, say } from '../context'
import { readJobs, readRuns } from '../history'
import { untilFinished } from '../load'
import { newerRecordJob, recordJob } from '../recorder'
import { METRICS_TOKEN } from '../servers'
import { everyJobFinished, noOverlaps, type Verdict } from '../verdicts'
import type { ScenarioResult } from './kills'

/**
 * Scenario 4: an old server (recorder only) and, later, a newer one that also knows chaosRecordNew. Jobs
 * of the new type submitted while only the old server runs stay pending (and are counted as unrunnable
 * in /metrics), are neither failed nor lost, and run once when the new server is up.
 */
export async function rollingDeploy(_cfg: ChaosConfig, ctx: ScenarioContext): Promise<ScenarioResult> {
  const t0 = Date.now()
  const old = await ctx.startServer('old')
  const submitter = createSubmitter(ctx.db.db, buildRegistry([recordJob, newerRecordJob]))
  const newer = (await submitter.submitJobs(Array.from({ length: 100 }, () => ({ type: 'chaosRecordNew', data: { batch: 'new-type' } })))).map((j) => j.id)
  const known = (await submitter.submitJobs(Array.from({ length: 100 }, () => ({ type: 'chaosRecord', data: { batch: 'old-type' } })))).map((j) => j.id)
  await untilFinished(ctx, known, 60_000)
  // The old server has looked at the queue many times by now (it claimed and finished the known type).
  const [waiting] = await ctx.sql`SELECT count(*) FILTER (WHERE finished IS NULL AND started IS NULL)::int AS pending, count(*) FILTER (WHERE finished IS NOT NULL)::int AS finished FROM worker_jobs WHERE id = ANY(${newer})`
  const metrics = await fetch(`${old.url}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } }).then((r) => r.text())
  const unrunnable = Number(/^worker_jobs_unrunnable (\S+)$/m.exec(metrics)?.[1] ?? Number.NaN)
  say(`  rolling deploy: ${waiting!.pending} new-type jobs pending under the old server; starting the newer one`)
  await ctx.startServer('new', { env: { CHAOS_WITH_NEW_TYPE: 'true' } })
  const left = await untilFinished(ctx, newer, 60_000)
  const runs = await readRuns(ctx.sql, t0)
  const jobs = await readJobs(ctx.sql, ctx.sql`id = ANY(${newer})`)
  const newRuns = runs.filter((r) => newer.includes(r.jobId))
  const onNew = newRuns.filter((r) => r.server === 'new').length
  const waitedOk: Verdict = {
    name: 'jobs of the new type wait, neither failed nor lost, while only the old server runs',
    ok: waiting!.pending === newer.length && waiting!.finished === 0 && unrunnable === newer.length,
    figure: `${waiting!.pending}/${newer.length} pending, ${waiting!.finished} finished before the newer server came; worker_jobs_unrunnable ${unrunnable}`,
  }
  const ranOnce: Verdict = {
    name: 'each ran once, on the newer server',
    ok: left === 0 && newRuns.length === newer.length && onNew === newer.length,
    figure: `${newRuns.length} runs of ${newer.length} jobs, ${onNew} on the newer server, ${left} left`,
  }
  return {
    name: 'rolling deploy (scenario 4)',
    verdicts: [waitedOk, ranOnce, everyJobFinished(newer, jobs), noOverlaps(newRuns, new Map())],
    figures: { seconds: Math.round((Date.now() - t0) / 1000) },
  }
}
