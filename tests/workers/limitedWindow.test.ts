import { afterAll, beforeAll, expect, test } from 'bun:test'
import type { SQL } from 'drizzle-orm'
import type postgres from 'postgres'
import type { Database, DbHandle } from '../../src/server/db/client'
import type { RateLimit } from '../../src/server/workers/jobs/types'
import { claimLimited, limitedClaimStatement, type TypeLimit, UNKEYED, WIDE_WINDOW_ROWS, windowClaimStatement, windowRows } from '../../src/server/workers/queue/limits'
import { indexTuplesRead } from '../helpers/plans'
import { openTestDb } from '../helpers/testDb'

/**
 * The claim of a keyed type reads a window of the type's first due rows instead of walking every key
 * with pending rows. The walk cost one index descent per key on every claim (790 ms with 100,000 keys),
 * under the type's lock. The window must give exactly the walk's answer: checked on random scenarios
 * (keys, priorities, due times, running rows, rate logs, bounds), including those where the window is
 * all rows of keys already full and the claim falls back to the walk.
 */
let t: Awaited<ReturnType<typeof openTestDb>>
let sql: postgres.Sql
let handle: DbHandle
const TYPE = 'wallets'

beforeAll(async () => {
  t = await openTestDb('limited_window', 1)
  ;({ sql, handle } = t)
})
afterAll(() => t.close())

const claimOpts = (limits: TypeLimit, limit: number, maxPriority?: number) => ({
  workerId: `window/${Math.random().toString(36).slice(2, 8)}`,
  leaseMs: 60_000,
  limit,
  types: [TYPE],
  type: TYPE,
  limits,
  ...(maxPriority === undefined ? {} : { maxPriority }),
})

/** Runs `statement` in a transaction that is rolled back; its first row. */
async function dryRun(d: Database, statement: SQL): Promise<Record<string, unknown>> {
  let row: Record<string, unknown> | undefined
  await d
    .transaction(async (tx) => {
      ;[row] = (await tx.execute(statement)) as unknown as Record<string, unknown>[]
      throw new Error('rollback')
    })
    .catch((e) => {
      if (e.message !== 'rollback') throw e
    })
  return row!
}
const idsOf = (row: Record<string, unknown>) => (JSON.parse(String(row.jobs)) as unknown[][]).map((t) => Number(t[0])).sort((a, b) => a - b)

test('with 20,000 keys holding a due row each, a claim reads the window, not one descent per key', async () => {
  await sql`DELETE FROM worker_jobs`
  await sql`INSERT INTO worker_jobs (type, data, concurrency_key) SELECT ${TYPE}, '{}', 'wallet-' || g FROM generate_series(1, 20000) AS g`
  await sql`ANALYZE worker_jobs`
  const limits: TypeLimit = { concurrency: null, perKey: 1, rate: null, keyRate: null }
  const before = await indexTuplesRead(handle.db)
  const got = await claimLimited(handle.db, claimOpts(limits, 3))
  const after = await indexTuplesRead(handle.db)
  const read = ['worker_jobs_limited_idx', 'worker_jobs_limited_head_idx'].reduce((n, k) => n + after[k]! - (before[k] ?? 0), 0)
  expect(got.jobs.map((j) => j.concurrencyKey)).toEqual(['wallet-1', 'wallet-2', 'wallet-3'])
  // The window (windowRows(3) rows) and a descent or two per priority in use; the walk read 20,000+.
  expect(read).toBeLessThanOrEqual(windowRows(3) + 10)
})

for (const c of [
  { backlog: 2_000, path: 'the wider window', walks: false },
  { backlog: WIDE_WINDOW_ROWS + 1_000, path: 'the walk of every key', walks: true },
]) {
  test(`one busy key's backlog of ${c.backlog.toLocaleString()} rows in front: ${c.path} finds the other keys' rows`, async () => {
    await sql`DELETE FROM worker_jobs`
    // 'busy' is at its limit (one running) and holds the first due rows; 'idle' has one row after them.
    await sql`INSERT INTO worker_jobs (type, data, concurrency_key, started, locked_by, lease_expires_at)
              VALUES (${TYPE}, '{}', 'busy', now(), 'someone', now() + interval '1 minute')`
    await sql`INSERT INTO worker_jobs (type, data, concurrency_key, due) SELECT ${TYPE}, '{}', 'busy', now() - interval '1 hour' FROM generate_series(1, ${c.backlog}::int)`
    await sql`INSERT INTO worker_jobs (type, data, concurrency_key, due) VALUES (${TYPE}, '{}', 'idle', now() - interval '1 minute')`
    await sql`ANALYZE worker_jobs`
    const limits: TypeLimit = { concurrency: null, perKey: 1, rate: null, keyRate: null }
    const window = await dryRun(handle.db, windowClaimStatement(claimOpts(limits, 1)))
    expect(window.exact).toBe(false)
    const before = await indexTuplesRead(handle.db)
    const got = await claimLimited(handle.db, claimOpts(limits, 1))
    const after = await indexTuplesRead(handle.db)
    expect(got.jobs.map((j) => j.concurrencyKey)).toEqual(['idle'])
    // The walk is the only reader of worker_jobs_limited_idx (the windows read worker_jobs_limited_head_idx).
    const walked = after.worker_jobs_limited_idx! - (before.worker_jobs_limited_idx ?? 0)
    if (c.walks) expect(walked).toBeGreaterThan(0)
    else expect(walked).toBe(0)
  })
}

/** A small seeded generator, so a failing scenario can be replayed. */
function prng(seed: number) {
  let s = seed >>> 0
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return { next, int: (n: number) => Math.floor(next() * n), pick: <T>(xs: readonly T[]) => xs[Math.floor(next() * xs.length)]! }
}

interface Scenario {
  limits: TypeLimit
  limit: number
  maxPriority: number | undefined
  rows: { key: string; priority: number; dueSecs: number; running: boolean }[]
  starts: { key: string; agoSecs: number }[]
}

function scenario(seed: number): Scenario {
  const r = prng(seed)
  const keyCount = r.pick([1, 3, 20, 300])
  const keyOf = () => (r.next() < 0.03 ? UNKEYED : `k${r.int(keyCount)}`)
  const rate: RateLimit | null = r.next() < 0.3 ? { max: 1 + r.int(40), perMs: 3_600_000 } : null
  const keyRate: RateLimit | null = r.next() < 0.3 ? { max: 1 + r.int(3), perMs: 3_600_000 } : null
  const limits: TypeLimit = { concurrency: r.next() < 0.5 ? 1 + r.int(30) : null, perKey: 1 + r.int(3), rate, keyRate }
  const rows: Scenario['rows'] = []
  // Sometimes one key's long backlog comes first (the window then holds nothing else).
  if (r.next() < 0.4) {
    const key = keyOf()
    for (let i = r.int(400); i > 0; i--) rows.push({ key, priority: 0, dueSecs: -7200 - i, running: false })
  }
  for (let i = r.int(600); i > 0; i--) {
    rows.push({ key: keyOf(), priority: r.pick([-5, 0, 0, 0, 3]), dueSecs: r.next() < 0.15 ? 600 : -r.int(3600), running: r.next() < 0.08 })
  }
  const starts: Scenario['starts'] = []
  for (let i = r.int(30); i > 0; i--) starts.push({ key: keyOf(), agoSecs: r.int(1800) })
  return { limits, limit: r.pick([1, 2, 5, 50, 250]), maxPriority: r.pick([undefined, undefined, 0, -5]), rows, starts }
}

async function load(s: Scenario) {
  await sql`DELETE FROM worker_jobs`
  await sql`DELETE FROM worker_rate_starts`
  if (s.rows.length > 0) {
    await sql`
      INSERT INTO worker_jobs (type, data, concurrency_key, priority, due, started, locked_by, lease_expires_at)
      SELECT ${TYPE}, '{}', k, p, now() + make_interval(secs => d), CASE WHEN running = 1 THEN now() END,
             CASE WHEN running = 1 THEN 'other' END, CASE WHEN running = 1 THEN now() + interval '1 hour' END
      FROM unnest(${s.rows.map((x) => x.key)}::text[], ${s.rows.map((x) => x.priority)}::int[], ${s.rows.map((x) => x.dueSecs)}::int[],
                  ${s.rows.map((x) => (x.running ? 1 : 0))}::int[]) AS t(k, p, d, running)`
  }
  if (s.starts.length > 0) {
    await sql`INSERT INTO worker_rate_starts (type, key, at)
              SELECT ${TYPE}, k, now() - make_interval(secs => a) FROM unnest(${s.starts.map((x) => x.key)}::text[], ${s.starts.map((x) => x.agoSecs)}::int[]) AS t(k, a)`
  }
}

test('on 120 random scenarios the claim takes exactly the rows the walk of every key takes, and goes quiet only when nothing more may start', async () => {
  const paths = { window: 0, walk: 0 }
  for (let seed = 1; seed <= 120; seed++) {
    const s = scenario(seed)
    await load(s)
    const opts = claimOpts(s.limits, s.limit, s.maxPriority)
    const walked = idsOf(await dryRun(handle.db, limitedClaimStatement(opts)))
    const exact = (await dryRun(handle.db, windowClaimStatement(opts))).exact === true
    paths[exact ? 'window' : 'walk']++
    const got = await claimLimited(handle.db, opts)
    expect({ seed, ids: got.jobs.map((j) => j.id).sort((a, b) => a - b) }).toEqual({ seed, ids: walked })
    // The worker loop takes "fewer than asked and nothing past the bound" as "quiet until news": then an
    // unbounded claim right after must find nothing it may start.
    if (got.jobs.length < s.limit && !got.moreBeyondBound) {
      const after = idsOf(await dryRun(handle.db, limitedClaimStatement(claimOpts(s.limits, s.limit - got.jobs.length))))
      expect({ seed, after }).toEqual({ seed, after: [] })
    }
  }
  // Both ways of answering were exercised.
  expect(paths.window).toBeGreaterThan(20)
  expect(paths.walk).toBeGreaterThan(5)
}, 120_000)
