import { execSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'
import type { ChaosConfig } from './config'
import { RSS_BOUND, type ScenarioResult } from './scenarios/kills'

const REPORT = new URL('../docs/RELIABILITY.md', import.meta.url).pathname

/** docs/RELIABILITY.md from a full run: every verdict with its figure, the faults, the machine and commit. */
export function writeReliabilityReport(cfg: ChaosConfig, results: readonly ScenarioResult[]): void {
  const commit = execSync('git rev-parse --short HEAD').toString().trim()
  const dirty = execSync('git status --porcelain -- src chaos').toString().trim() ? ' (with uncommitted changes)' : ''
  const lines = [
    '# Reliability: what the fault suite measured',
    '',
    `Written by \`npm run chaos\` (full mode) on ${new Date().toISOString().slice(0, 10)}, commit ${commit}${dirty}, on ${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Bun ${Bun.version}.`,
    `The quick mode (\`npm run chaos -- --quick\`, run by .ci/run) checks the same verdicts on ${cfg.quick ? cfg.jobs : 10_000} jobs and 30 s of cron.`,
    '',
    'How to read it: each scenario lists its verdicts (each must hold) with the figure it rests on, then its',
    'counts. Times are seconds of wall clock. A "rerun" is a run of a job beyond its first; each is attributed',
    'to the fault that cut the earlier run short. Memory bounds: main process ' +
      `${RSS_BOUND.main} MiB, worker child ${RSS_BOUND.child} MiB, growth at most ${RSS_BOUND.growthMib} MiB per process once warm.`,
    '',
  ]
  for (const r of results) {
    lines.push(`## ${r.name}`, '', '| verdict | held | figure |', '|---|---|---|')
    for (const v of r.verdicts) lines.push(`| ${v.name} | ${v.ok ? 'yes' : '**no**'} | ${v.figure.replaceAll('|', '\\|')} |`)
    const figs = Object.entries(r.figures)
    if (figs.length > 0) lines.push('', figs.map(([k, v]) => `${k}: ${v}`).join(' · '))
    lines.push('')
  }
  writeFileSync(REPORT, `${lines.join('\n')}\n`)
}
