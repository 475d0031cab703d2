/**
 * `bun bench/limitedFloodOnly.ts [rounds]`: the concurrency-1 type (5 ms jobs) alone, then inside a no-op
 * flood, on our server as `npm run bench` starts it, `rounds` times (default 2). For each run: the type's
 * rate, and from its rows the gap between one job's finish and the next one's start and each job's run
 * (claim to finish), their medians and 90th percentiles, and how often the next job ran on the same child.
 * Inside the flood only the jobs that ran while it did count (the flood is longer than their backlog).
 * Run it from a worktree of another commit, alternating, for an A/B in one sitting.
 */
import type postgres from 'postgres'
import { connect, recreateDatabase, sleep } from './db'
import { OURS_DB, resetOursTable, startOurs } from './ours'

const SERIAL = 300
const FLOOD = 200_000
const rounds = Number(process.argv[2] ?? 2)

const url = await recreateDatabase(OURS_DB)
const sql = connect(url, 2)
const server = await startOurs(url, { BENCH_LIMITED: 'true' })
try {
  for (let r = 0; r < rounds; r++) for (const flood of [0, FLOOD]) console.log(await run(sql, flood))
} finally {
  await server.stop()
  await sql.end()
}
process.exit(0)

async function run(sql: postgres.Sql, flood: number): Promise<string> {
  await resetOursTable(url)
  await sql.begin(async (tx) => {
    await tx`INSERT INTO worker_jobs (type, user_id, due, data, concurrency_key) SELECT 'serial', 0, now(), ${sql.json({ ms: 5 })}, '' FROM generate_series(1, ${SERIAL})`
    if (flood > 0) await tx`INSERT INTO worker_jobs (type, user_id, due) SELECT 'noop', 0, now() FROM generate_series(1, ${flood})`
  })
  while (Number((await sql`SELECT count(*) AS n FROM worker_jobs WHERE finished IS NULL`)[0]!.n) > 0) await sleep(100)
  const [f] = await sql`SELECT extract(epoch FROM min(started)) * 1000 AS a, extract(epoch FROM max(finished)) * 1000 AS b, count(*)::int AS n FROM worker_jobs WHERE type = 'noop'`
  const rows = await sql<{ s: number; f: number; w: string }[]>`
    SELECT extract(epoch FROM started)::float8 * 1000 AS s, extract(epoch FROM finished)::float8 * 1000 AS f, locked_by AS w
    FROM worker_jobs WHERE type = 'serial' ORDER BY started`
  const inside = flood > 0 ? rows.filter((x) => x.s >= Number(f!.a) && x.f <= Number(f!.b)) : rows
  const gaps: number[] = []
  const runs: number[] = []
  let sameChild = 0
  for (let i = 1; i < inside.length; i++) {
    gaps.push(inside[i]!.s - inside[i - 1]!.f)
    runs.push(inside[i]!.f - inside[i]!.s)
    if (inside[i]!.w === inside[i - 1]!.w) sameChild++
  }
  const q = (a: number[], p: number) => [...a].sort((x, y) => x - y)[Math.floor(p * (a.length - 1))]?.toFixed(2)
  const span = inside.length > 1 ? (inside.at(-1)!.f - inside[0]!.s) / 1000 : Number.NaN
  const where = flood > 0 ? `in the flood (${Math.round(f!.n / ((Number(f!.b) - Number(f!.a)) / 1000))} no-op jobs/s)` : 'alone'
  return `${where}: ${inside.length} jobs, ${(inside.length / span).toFixed(1)} jobs/s; gap p50 ${q(gaps, 0.5)} p90 ${q(gaps, 0.9)} ms; run p50 ${q(runs, 0.5)} p90 ${q(runs, 0.9)} ms; same child ${sameChild}/${gaps.length}`
}
