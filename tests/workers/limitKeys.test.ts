import { afterAll, beforeAll, beforeEach, expect, test } from 'bun:test'
import type postgres from 'postgres'
import { z } from 'zod'
import type { ServerApp } from '../../src/server/serverApp'
import { defineJob } from '../../src/server/workers/jobs/types'
import { reconcileLimitKeys } from '../../src/server/workers/queue/limitKeys'
import { limitedTypes, UNKEYED } from '../../src/server/workers/queue/limits'
import { announceServer } from '../../src/server/workers/queue/servers'
import { JobInputError, submitJob } from '../../src/server/workers/queue/submit'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { CREATE_RUNS_TABLE, sqlClient } from '../helpers/engine'
import { appWith, limitedType, loopOf, runsOf } from '../helpers/loops'
import { waitFor } from '../helpers/wait'

/**
 * Every pending row's concurrency_key matches the registry, whoever wrote it. A row of a keyed type
 * written without a key used to get '' from the insert trigger (a real key: it ran beside a job of its own
 * key, for good); keys computed at boot read the raw stored data instead of what the schema gives a submit;
 * and a row keyed for a limit a deploy removed was never claimed again until a server restarted.
 */
let db: TestDatabase
let sql: postgres.Sql
let app: ServerApp

/** A key from the schema's output: the raw data lacks the default and has the other case. */
const wallet = defineJob({
  type: 'wallet',
  dataSchema: z.object({ wallet: z.string().toLowerCase(), chain: z.string().default('main'), holdMs: z.number().int().default(0) }),
  concurrencyKey: (d) => {
    if (d.wallet === 'refused') throw new Error('no such wallet')
    return `${d.chain}:${d.wallet}`
  },
  async run() {
    return {}
  },
})

beforeAll(async () => {
  db = await createTestDatabase('limit_keys')
  sql = sqlClient(db.url)
  await sql.unsafe(CREATE_RUNS_TABLE)
  // `formerlyKeyed` has no limit in this deploy: an older server keyed its rows.
  app = await appWith(db.url, [wallet, limitedType('formerlyKeyed', {})])
})
afterAll(async () => {
  await app.dbHandle.close()
  await sql.end()
  await db.drop()
})
beforeEach(async () => {
  await sql`TRUNCATE worker_jobs, worker_servers, test_job_runs`
  // What a running manager does first: announce its limited types, which the insert trigger reads.
  await announceServer(app.db, { id: 'srv-a', hostname: 'h', pid: 1, jobTypes: Object.keys(app.registry), limitedTypes: limitedTypes(app.registry) })
})

const keyOf = async (id: number | string) => (await sql`SELECT concurrency_key FROM worker_jobs WHERE id = ${id}`)[0]!.concurrency_key
const announcePass = () => app.db.transaction((tx) => reconcileLimitKeys(tx, app.registry, { boot: false }))

test('a hand-written row of a keyed type is not run under a guessed key, then runs after its own key', async () => {
  const w = loopOf(app, db.url, { concurrency: 4 })
  await w.loop.start()
  try {
    const alice = await submitJob(app.db, app.registry, { type: 'perKey', data: { key: 'alice', holdMs: 600 } })
    await waitFor(async () => (await sql`SELECT 1 FROM worker_jobs WHERE id = ${alice.id} AND started IS NOT NULL`).length > 0, { what: 'alice 1 to start' })
    const rounds = w.loop.claimRounds
    const [hand] = await sql`INSERT INTO worker_jobs (type, data) VALUES ('perKey', '{"key": "alice", "holdMs": 0}') RETURNING id`
    expect(await keyOf(hand!.id)).toBe(UNKEYED)
    // Slots are free and the loop has looked since the insert's NOTIFY: an UNKEYED row of a keyed type is skipped.
    await waitFor(() => w.loop.claimRounds > rounds && w.loop.parked, { what: 'the loop to look and park' })
    expect((await sql`SELECT started FROM worker_jobs WHERE id = ${hand!.id}`)[0]!.started).toBeNull()

    const repaired = await announcePass()
    expect(repaired.moved).toBe(1)
    expect(await keyOf(hand!.id)).toBe('alice')
    const ids = [alice.id, Number(hand!.id)]
    await waitFor(async () => (await runsOf(sql, ids)).length === 2, { timeoutMs: 15_000, what: 'both runs' })
    const [x, y] = await runsOf(sql, ids)
    expect(y!.started_at >= x!.ended_at).toBe(true)
  } finally {
    await w.stop()
  }
}, 30_000)

test('a key is computed from the data as the schema gives it, as at submit', async () => {
  const [hand] = await sql`INSERT INTO worker_jobs (type, data) VALUES ('wallet', '{"wallet": "0xABC"}') RETURNING id`
  await announcePass()
  const submitted = await submitJob(app.db, app.registry, { type: 'wallet', data: { wallet: '0xABC' } })
  expect(submitted.concurrencyKey).toBe('main:0xabc')
  expect(await keyOf(hand!.id)).toBe('main:0xabc')
})

test('valid data the key function refuses fails the row, naming why; data the schema refuses gets a key and fails at its run', async () => {
  const [refused] = await sql`INSERT INTO worker_jobs (type, data) VALUES ('wallet', '{"wallet": "refused"}') RETURNING id`
  const [invalid] = await sql`INSERT INTO worker_jobs (type, data) VALUES ('wallet', '{"wallet": 5}') RETURNING id`
  const repaired = await announcePass()
  expect(repaired.failed).toEqual([Number(refused!.id)])
  const [row] = await sql`SELECT started, finished, success, result FROM worker_jobs WHERE id = ${refused!.id}`
  expect(row!.started).toBeNull()
  expect(row!.success).toBe(false)
  expect(row!.result.error).toContain('no such wallet')
  expect(await keyOf(invalid!.id)).toBe('')
})

test('data the schema throws on (a transform) fails that row alone; the pass, and the announce around it, go on', async () => {
  const parsing = defineJob({
    type: 'parsing',
    dataSchema: z.object({ payload: z.string().transform((t) => JSON.parse(t) as { wallet: string }) }),
    concurrencyKey: (d) => d.payload.wallet,
    async run() {},
  })
  const other = await appWith(db.url, [parsing])
  try {
    const rows = await sql`
      INSERT INTO worker_jobs (type, data)
      VALUES ('parsing', ${sql.json({ payload: '{not json' })}), ('parsing', ${sql.json({ payload: JSON.stringify({ wallet: '0xC' }) })})
      RETURNING id`
    await announceServer(other.db, { id: 'srv-b', hostname: 'h', pid: 3, jobTypes: ['parsing'], limitedTypes: ['parsing'] })
    const repaired = await other.db.transaction((tx) => reconcileLimitKeys(tx, other.registry, { boot: true }))
    expect(repaired.failed).toEqual([Number(rows[0]!.id)])
    expect((await sql`SELECT result FROM worker_jobs WHERE id = ${rows[0]!.id}`)[0]!.result.error).toContain('JSON')
    expect(await keyOf(rows[1]!.id)).toBe('0xC')
  } finally {
    await other.dbHandle.close()
  }
})

test('a key function may not return the reserved key: refused at submit, naming data, nothing written', async () => {
  const reserved = defineJob({ type: 'reserved', dataSchema: z.object({ k: z.string() }), concurrencyKey: (d) => d.k, async run() {} })
  const other = await appWith(db.url, [reserved])
  try {
    const err = await submitJob(other.db, other.registry, { type: 'reserved', data: { k: UNKEYED } }).catch((e) => e)
    expect(err).toBeInstanceOf(JobInputError)
    expect(err.field).toBe('data')
    expect((await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE type = 'reserved'`)[0]!.n).toBe(0)
  } finally {
    await other.dbHandle.close()
  }
})

test('rows keyed for a limit this deploy removed lose the key, and the common claim runs them', async () => {
  // Left by an older server: a rescued run and a cron successor, both still keyed.
  const rows = await sql`
    INSERT INTO worker_jobs (type, data, concurrency_key, cron_schedule)
    VALUES ('formerlyKeyed', '{}', 'alice', NULL), ('formerlyKeyed', '{}', 'bob', '* * * * *') RETURNING id`
  const ids = rows.map((r) => Number(r.id))
  // While a live older server still limits the type, its own limited claim runs them: the keys stay.
  await announceServer(app.db, { id: 'srv-old', hostname: 'h', pid: 2, jobTypes: ['formerlyKeyed'], limitedTypes: ['formerlyKeyed'] })
  await announcePass()
  expect(await keyOf(ids[0]!)).toBe('alice')
  await sql`DELETE FROM worker_servers WHERE id = 'srv-old'`
  expect((await announcePass()).moved).toBe(2)
  expect(await keyOf(ids[0]!)).toBeNull()
  const w = loopOf(app, db.url, { concurrency: 4 })
  await w.loop.start()
  try {
    await waitFor(async () => (await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE id = ANY(${ids}) AND finished IS NOT NULL`)[0]!.n === 2, {
      what: 'both formerly keyed jobs to run',
    })
  } finally {
    await w.stop()
  }
}, 30_000)

test('at boot: rows with no key and legacy "" rows of a keyed type get their key; the announce pass leaves both alone', async () => {
  await sql`DELETE FROM worker_servers`
  // Written while no server was announced (the trigger keys nothing), and a '' row from before UNKEYED.
  const [none] = await sql`INSERT INTO worker_jobs (type, data) VALUES ('wallet', '{"wallet": "0xA"}') RETURNING id`
  const [legacy] = await sql`INSERT INTO worker_jobs (type, data, concurrency_key) VALUES ('wallet', '{"wallet": "0xB"}', '') RETURNING id`
  await announcePass()
  expect(await keyOf(none!.id)).toBeNull()
  expect(await keyOf(legacy!.id)).toBe('')
  const boot = await reconcileLimitKeys(app.db, app.registry, { boot: true })
  expect(boot.moved).toBe(2)
  expect(await keyOf(none!.id)).toBe('main:0xa')
  expect(await keyOf(legacy!.id)).toBe('main:0xb')
})
