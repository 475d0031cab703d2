/**
 * `npm run chaos [-- --quick] [--only name,name]`: the fault and load suite. It starts its own Postgres
 * (embedded, on a free port), real server processes and a recorder job type, breaks things on purpose,
 * and prints one verdict per promise with its figure. Exit code 1 when any verdict fails. The full run
 * writes its figures to docs/RELIABILITY.md.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadChaosConfig } from './config'
import { ScenarioContext, say } from './context'
import { startChaosPostgres } from './postgres'
import { writeReliabilityReport } from './report'
import { bootWithoutDatabase } from './scenarios/bootWithoutDb'
import { manyInstances } from './scenarios/instances'
import { killsUnderLoad, type ScenarioResult } from './scenarios/kills'
import { networkPartition } from './scenarios/partition'
import { rollingDeploy } from './scenarios/rollingDeploy'

const cfg = loadChaosConfig(process.argv.slice(2))
const onlyArg = process.argv.indexOf('--only')
const only = onlyArg >= 0 ? new Set(process.argv[onlyArg + 1]!.split(',')) : null

const SCENARIOS = {
  kills: killsUnderLoad,
  partition: networkPartition,
  instances: manyInstances,
  rollingDeploy,
  bootWithoutDb: bootWithoutDatabase,
} as const

const root = mkdtempSync(join(tmpdir(), 'chaos-'))
say(`${cfg.quick ? 'quick' : 'full'} run; logs in ${root}`)
const pg = await startChaosPostgres()
say(`Postgres on port ${pg.port}`)
const results: ScenarioResult[] = []
let failed = 0
try {
  for (const [name, scenario] of Object.entries(SCENARIOS)) {
    if (only && !only.has(name)) continue
    say(`scenario ${name}`)
    const ctx = new ScenarioContext(pg, join(root, name), cfg.leaseMs)
    const started = Date.now()
    let result: ScenarioResult
    try {
      result = await scenario(cfg, ctx)
    } catch (err) {
      result = { name, verdicts: [{ name: 'scenario ran to its end', ok: false, figure: String((err as Error)?.stack ?? err) }], figures: {} }
    } finally {
      await ctx.close().catch(() => {})
    }
    results.push(result)
    for (const v of result.verdicts) {
      if (!v.ok) failed++
      console.log(`${v.ok ? 'PASS' : 'FAIL'}  ${result.name}: ${v.name} — ${v.figure}`)
    }
    say(`scenario ${name} took ${Math.round((Date.now() - started) / 1000)} s`)
    // Each scenario starts from an empty table, so its verdicts see only its own jobs.
    await pg.sql`TRUNCATE worker_jobs, chaos_runs, worker_servers RESTART IDENTITY`
  }
} finally {
  await pg.close()
}
const total = results.reduce((n, r) => n + r.verdicts.length, 0)
console.log(`\nchaos: ${total - failed} verdicts held, ${failed} failed`)
if (!cfg.quick && !only) writeReliabilityReport(cfg, results)
if (failed === 0) rmSync(root, { recursive: true, force: true })
else console.log(`logs kept in ${root}`)
process.exit(failed === 0 ? 0 : 1)
