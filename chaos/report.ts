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
    'counts. Times are seconds of wall clock. Memory bounds: main process ' +
      `${RSS_BOUND.main} MiB, worker child ${RSS_BOUND.child} MiB, growth at most ${RSS_BOUND.growthMib} MiB per process once warm.`,
    '',
    '## How the verdicts are decided',
    '',
    '- The recorder job (`chaos/recorder.ts`) writes a row to `chaos_runs` before its work (job id, attempt,',
    "  server, pid, due, start, and the job's `last_error`: the engine's reason for running it again) and its",
    '  end and outcome after (`ok`, or `aborted: <reason>` when the engine fired its signal). Its writes are',
    '  retried through outages, so a run is on record unless its process was killed. The driver logs every',
    '  fault it causes, with its time and the pids it killed (`chaos/events.ts`).',
    '- **Lost:** every id the driver got back from a submit is counted: it must be finished and succeeded.',
    '  A batch whose submit failed during an outage is looked up by its marker before it is retried, so none',
    '  is inserted twice.',
    "- **Overlap:** a run's end is its recorded end, or its process's death for a killed one; a run with no",
    '  end whose process was never killed counts as still running. No two runs of a job may overlap.',
    "- **Reruns:** each run beyond a job's first needs a cause: the earlier run has no end and its pid was",
    '  killed; or it was aborted and its server was cut off or the database went away; or it ended but its',
    '  outcome was not written before its process died or the database went away. An attempt that left no',
    "  record at all (killed before the recorder's first write) is explained only when the engine's",
    '  `last_error` names the interruption and a fault of that kind happened just before its release (its',
    '  due minus the 1 s rerun delay: a rerun may wait long after that behind a backlog).',
    "- **Deaths:** every worker child that exited (from its manager's log) must be one the driver killed.",
    '- **Cron:** each row of the per-second chain is one scheduled second; two rows for one second are a',
    '  duplicate; a missing second is a gap, explained only by a fault: the tick before it was cut short, or',
    '  the database was away. The longest gap and its cause are reported.',
    '- `tests/chaos/verdicts.test.ts` feeds each verdict made-up histories it must reject.',
    '',
    '## Defects the suite found, each fixed in the engine with a focused regression test',
    '',
    '- An orphaned child (its server SIGKILLed) ran a job from a claim that was in flight when it aborted',
    '  everything, until its exit deadline killed it mid-run. Now abortAll stops claiming and such a job',
    '  never starts and goes back to pending untouched (`tests/workers/workerLoop.test.ts`).',
    '- A child started during a Postgres restart exited on its LISTEN connection error (the manager only',
    '  respawned it into the same outage). Now it waits for the database (`tests/workers/workerLoop.test.ts`).',
    "- A child killed while its manager could not reach the database had its jobs back only when their lease",
    "  expired (10 s later, as 'lease expired'). Now the exit rescue is retried every second",
    '  (`tests/workers/lifecycle.test.ts`, through a TCP proxy).',
    '- A connection reset reported twice by a restarting Postgres (postgres.js had already dropped its',
    "  listeners) was an uncaught exception that killed a child mid-run. Now such a stray socket error is",
    '  logged and ignored; any other uncaught error still ends the process (`tests/server/strayErrors.test.ts`).',
    '- Outage connection errors were logged with their stacks; now as `{type, code, message}`',
    '  (`tests/server/boot.test.ts`).',
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
