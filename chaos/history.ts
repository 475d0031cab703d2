import type postgres from 'postgres'
import type { JobRow, RunRow } from './verdicts'

/** Reads back what happened: the recorder's runs and the jobs' rows, for the verdicts. */

const ms = (v: unknown) => (v === null || v === undefined ? null : new Date(v as string).getTime())

export async function readRuns(sql: postgres.Sql, since = 0): Promise<RunRow[]> {
  const rows = await sql`
    SELECT job_id, attempt, server, pid, due, started_at, ended_at, outcome, last_error FROM chaos_runs
    WHERE started_at >= ${new Date(since)} ORDER BY run_id`
  return rows.map((r) => ({
    jobId: Number(r.job_id),
    attempt: r.attempt,
    server: r.server,
    pid: r.pid,
    due: ms(r.due)!,
    startedAt: ms(r.started_at)!,
    endedAt: ms(r.ended_at),
    outcome: r.outcome,
    lastError: r.last_error,
  }))
}

export async function readJobs(sql: postgres.Sql, where: postgres.PendingQuery<postgres.Row[]>): Promise<Map<number, JobRow>> {
  const rows = await sql`
    SELECT id, finished IS NOT NULL AS finished, success, attempt, created_at, cron_schedule FROM worker_jobs WHERE ${where}`
  return new Map(
    rows.map((r) => [
      Number(r.id),
      { id: Number(r.id), finished: r.finished, success: r.success, attempt: r.attempt, createdAt: ms(r.created_at)!, cronSchedule: r.cron_schedule },
    ]),
  )
}

/**
 * Waits until no run record is open other than those of killed processes: an aborted run writes its end
 * in the background, once its database answers again.
 */
export async function runsSettled(sql: postgres.Sql, killed: ReadonlySet<number>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const open = await sql`SELECT DISTINCT pid FROM chaos_runs WHERE ended_at IS NULL`
    if (open.every((r) => killed.has(r.pid))) return
    if (Date.now() > deadline) return
    await Bun.sleep(250)
  }
}
