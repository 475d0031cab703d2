import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { type AddressInfo, createConnection, createServer, type Server, type Socket } from 'node:net'
import { join } from 'node:path'
import { drizzle } from 'drizzle-orm/postgres-js'
import postgres from 'postgres'
import type { Database } from '../../src/server/db/client'
import * as schema from '../../src/server/db/schema'
import {
  createLiveHub,
  type LiveHub,
  type LiveHubOptions,
  LiveLimitError,
  LiveOverflowError,
  MAX_SUBSCRIPTIONS,
  MAX_SUBSCRIPTIONS_PER_USER,
} from '../../src/server/live/hub'
import { createLogger } from '../../src/server/log'
import { statusOf } from '../../src/server/workers/queue/states'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { startTcpProxy } from '../helpers/tcpProxy'
import { waitFor } from '../helpers/wait'

const INSERT_FIXTURE = join(import.meta.dir, '../fixtures/insertNotification.ts')
const log = createLogger({ level: process.env.LIVE_TEST_LOG_LEVEL ?? 'silent' })

let db: TestDatabase
/** Another client, standing for every other writer: psql, a worker child, another server. */
let other: postgres.Sql
let userA: number
let userB: number
const cleanups: (() => Promise<void>)[] = []
const latencies: Record<string, number> = {}

interface TestHub {
  hub: LiveHub
  client: postgres.Sql
  /** application_name of this hub's connections (its LISTEN connection's too). */
  app: string
  /** Every statement the hub ran through drizzle: the injected query counter. */
  queries: string[]
}

/** A hub on its own client, as one server instance would have; `url` lets a test put a proxy in between. */
function openHub(name: string, opts: Partial<LiveHubOptions> = {}, url = db.url): TestHub {
  const app = `live-${name}-${Math.random().toString(36).slice(2, 8)}`
  const client = postgres(url, { max: 4, onnotice: () => {}, connect_timeout: 2, connection: { application_name: app } })
  const queries: string[] = []
  const hubDb = drizzle(client, { schema, logger: { logQuery: (q) => void queries.push(q) } }) as unknown as Database
  const hub = createLiveHub({ sql: client, db: hubDb, log, pollMs: 25, heartbeatMs: 60_000, ...opts })
  cleanups.push(async () => {
    await hub.close()
    await client.end({ timeout: 1 })
  })
  return { hub, client, app, queries }
}

async function nextWithin<T>(it: AsyncIterator<T>, ms = 3_000, what = 'an item'): Promise<IteratorResult<T>> {
  let timer: ReturnType<typeof setTimeout> | undefined
  try {
    return await Promise.race([
      it.next(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms)
      }),
    ])
  } finally {
    clearTimeout(timer)
  }
}

async function valueWithin<T>(it: AsyncIterator<T>, ms = 3_000, what = 'an item'): Promise<T> {
  const r = await nextWithin(it, ms, what)
  if (r.done) throw new Error(`the stream ended while waiting for ${what}`)
  return r.value
}

async function insertNotification(userId: number, data: Record<string, unknown> = {}): Promise<number> {
  const [row] = await other<{ id: number }[]>`INSERT INTO notifications (user_id, data) VALUES (${userId}, ${other.json(data as postgres.JSONValue)}) RETURNING id`
  return row!.id
}

async function insertJob(): Promise<number> {
  const [row] = await other<{ id: string }[]>`INSERT INTO worker_jobs (type, user_id) VALUES ('liveTest', 0) RETURNING id`
  return Number(row!.id)
}

/** The backend pid of a hub's LISTEN connection, as Postgres reports it. */
async function listenerPidOf(app: string): Promise<number | null> {
  const rows = await other<{ pid: number }[]>`
    SELECT pid FROM pg_stat_activity
     WHERE datname = current_database() AND application_name = ${app} AND query ILIKE ${'listen %'}`
  return rows.length === 1 ? rows[0]!.pid : null
}

function emptyMaps(hub: LiveHub) {
  const s = hub.stats()
  return {
    notificationSubscriptions: s.notificationSubscriptions,
    jobSubscriptions: s.jobSubscriptions,
    usersWatched: s.usersWatched,
    jobsWatched: s.jobsWatched,
    callersCounted: s.callersCounted,
  }
}
const EMPTY = { notificationSubscriptions: 0, jobSubscriptions: 0, usersWatched: 0, jobsWatched: 0, callersCounted: 0 }

beforeAll(async () => {
  db = await createTestDatabase('live')
  other = postgres(db.url, { max: 2, onnotice: () => {}, connection: { application_name: 'live-test-writer' } })
  const rows = await other<{ id: number }[]>`
    INSERT INTO users (wallet_address) VALUES ('0x000000000000000000000000000000000000000a'), ('0x000000000000000000000000000000000000000b')
    RETURNING id`
  userA = rows[0]!.id
  userB = rows[1]!.id
})

afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {})
  await other.end()
  await db.drop()
  console.log(`live delivery latencies (ms): ${JSON.stringify(latencies)}`)
})

describe('notifications', () => {
  test('a notification committed by another connection reaches the subscriber within 1 s', async () => {
    const { hub, app } = openHub('conn')
    // Lazy: no LISTEN before the first subscriber.
    expect(await listenerPidOf(app)).toBeNull()
    expect(hub.stats().counters.listens).toBe(0)
    const ac = new AbortController()
    const stream = hub.notifications(userA, ac.signal)
    const second = hub.notifications(userA, ac.signal)
    const third = hub.notifications(userB, ac.signal)
    await Promise.all([stream.ready, second.ready, third.ready])
    // One LISTEN connection for all of them (listenerPidOf wants exactly one).
    expect(await listenerPidOf(app)).toBe(hub.stats().listenerPid)
    expect(hub.stats().counters.listens).toBe(1)
    const t0 = performance.now()
    const id = await insertNotification(userA, { kind: 'conn' })
    const row = await valueWithin(stream, 2_000, 'the notification')
    const ms = performance.now() - t0
    latencies.otherConnection = Math.round(ms * 10) / 10
    expect(ms).toBeLessThan(1_000)
    expect(row).toMatchObject({ id, userId: userA, data: { kind: 'conn' }, read: false })
    expect(row.createdAt).toBeInstanceOf(Date)
    expect((await valueWithin(second)).id).toBe(id)
    expect(third.queued).toBe(0)
    ac.abort()
  })

  test('a notification committed by another OS process (its own client) reaches the subscriber within 1 s', async () => {
    const { hub } = openHub('proc')
    const ac = new AbortController()
    const stream = hub.notifications(userA, ac.signal)
    await stream.ready
    // Waiting before the child starts, so the moment of delivery is the moment the hub yields the row.
    const delivered = valueWithin(stream, 10_000, 'the child notification').then((row) => ({ row, at: Date.now() }))
    const child = Bun.spawn([process.execPath, INSERT_FIXTURE], {
      env: { ...process.env, DATABASE_URL: db.url, USER_ID: String(userA) },
      stdout: 'pipe',
      stderr: 'pipe',
    })
    const [out, err, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited])
    expect(err).toBe('')
    expect(code).toBe(0)
    const printed = JSON.parse(out.trim()) as { id: number; committedAt: number; pid: number }
    expect(printed.pid).not.toBe(process.pid)
    const { row, at } = await delivered
    const ms = at - printed.committedAt
    latencies.otherProcess = ms
    expect(row.id).toBe(printed.id)
    expect(row.data).toEqual({ from: 'child', pid: printed.pid })
    expect(ms).toBeLessThan(1_000)
    ac.abort()
  })

  test("two hubs (two instances) both receive it; user A's subscriber never gets user B's", async () => {
    const x = openHub('x')
    const y = openHub('y')
    const ac = new AbortController()
    const xA = x.hub.notifications(userA, ac.signal)
    const xB = x.hub.notifications(userB, ac.signal)
    const yA = y.hub.notifications(userA, ac.signal)
    await Promise.all([xA.ready, xB.ready, yA.ready])
    // Two instances: two LISTEN connections.
    expect(await listenerPidOf(x.app)).not.toBeNull()
    expect(await listenerPidOf(y.app)).not.toBeNull()
    expect(await listenerPidOf(x.app)).not.toBe(await listenerPidOf(y.app))

    const b1 = await insertNotification(userB, { n: 'b1' })
    const t0 = performance.now()
    const a1 = await insertNotification(userA, { n: 'a1' })
    expect((await valueWithin(xB, 2_000, "B's notification")).id).toBe(b1)
    // B's row was committed first: had it been given to A's subscribers, it would come before A's.
    const [gotX, gotY] = await Promise.all([valueWithin(xA, 2_000, 'a1 on x'), valueWithin(yA, 2_000, 'a1 on y')])
    latencies.twoInstances = Math.round((performance.now() - t0) * 10) / 10
    expect(gotX.id).toBe(a1)
    expect(gotY.id).toBe(a1)
    expect(performance.now() - t0).toBeLessThan(1_000)

    const a2 = await insertNotification(userA, { n: 'a2' })
    expect((await valueWithin(xA, 2_000, 'a2 on x')).id).toBe(a2)
    expect((await valueWithin(yA, 2_000, 'a2 on y')).id).toBe(a2)
    expect(xB.queued).toBe(0)
    expect(xA.queued).toBe(0)
    ac.abort()
  })

  test('the payload is only a hint: a forged NOTIFY naming user A for a row of B gives A nothing', async () => {
    const { hub } = openHub('forged')
    const ac = new AbortController()
    const a = hub.notifications(userA, ac.signal)
    const b = hub.notifications(userB, ac.signal)
    await Promise.all([a.ready, b.ready])
    const b1 = await insertNotification(userB, { n: 'b1' })
    expect((await valueWithin(b, 2_000, 'b1')).id).toBe(b1)
    // Anyone with database access can notify: a row id of B's under A's name, a missing row, garbage.
    await other`SELECT pg_notify('notification_added', ${JSON.stringify({ id: b1, userId: userA })})`
    await other`SELECT pg_notify('notification_added', ${JSON.stringify({ id: 2_000_000_000, userId: userA })})`
    await other`SELECT pg_notify('notification_added', ${'not json'})`
    await other`SELECT pg_notify('notification_added', ${JSON.stringify({ id: -1, userId: userA })})`
    const a1 = await insertNotification(userA, { n: 'a1' })
    expect((await valueWithin(a, 2_000, 'a1')).id).toBe(a1)
    // B already had b1: the forged announcement did not deliver it twice.
    const b2 = await insertNotification(userB, { n: 'b2' })
    expect((await valueWithin(b, 2_000, 'b2')).id).toBe(b2)
    await waitFor(() => hub.stats().counters.notificationFetches >= 3, { what: 'the fetches' })
    ac.abort()
  })

  test('the LISTEN connection is terminated; a notification committed while it is down arrives after the reconnect', async () => {
    // Through a proxy held shut while the connection is down, so the insert certainly commits before the
    // LISTEN is back (nothing announces it to this hub: only the catch-up can deliver it).
    const proxy = await startTcpProxy()
    cleanups.push(() => proxy.close())
    const h = openHub('term', {}, proxy.urlThrough(db.url))
    const ac = new AbortController()
    const stream = h.hub.notifications(userA, ac.signal)
    await stream.ready
    const live = await insertNotification(userA, { n: 'before' })
    expect((await valueWithin(stream, 2_000, 'the first notification')).id).toBe(live)

    const pid = await listenerPidOf(h.app)
    expect(pid).not.toBeNull()
    expect(h.hub.stats().listenerPid).toBe(pid)
    proxy.blackhole('hold')
    const [killed] = await other<{ ok: boolean }[]>`SELECT pg_terminate_backend(${pid}, 5000) AS ok`
    expect(killed!.ok).toBe(true)
    expect(await listenerPidOf(h.app)).toBeNull()
    const missed = await insertNotification(userA, { n: 'while down' })
    expect(stream.queued).toBe(0)
    proxy.heal()

    const row = await valueWithin(stream, 5_000, 'the notification committed while the LISTEN was down')
    expect(row.id).toBe(missed)
    const s = h.hub.stats()
    expect(s.counters.reconnects).toBeGreaterThanOrEqual(1)
    expect(s.counters.catchUps).toBeGreaterThanOrEqual(1)
    const newPid = await waitFor(() => listenerPidOf(h.app), { what: 'the new LISTEN connection' })
    expect(newPid).not.toBe(pid)
    // And the live path works again.
    const after = await insertNotification(userA, { n: 'after' })
    expect((await valueWithin(stream, 2_000, 'the notification after the reconnect')).id).toBe(after)
    expect(stream.queued).toBe(0)
    ac.abort()
  }, 15_000)

  test('the database refuses connections long enough for postgres.js to give the LISTEN up: the watchdog listens again and catches up', async () => {
    const proxy = await startRefusingProxy()
    cleanups.push(() => proxy.close())
    const h = openHub('outage', { heartbeatMs: 200 }, proxy.urlThrough(db.url))
    const ac = new AbortController()
    const stream = h.hub.notifications(userA, ac.signal)
    await stream.ready
    const live = await insertNotification(userA, { n: 'before' })
    expect((await valueWithin(stream, 2_000, 'the first notification')).id).toBe(live)

    const downAt = Date.now()
    await proxy.down()
    const missed = await insertNotification(userA, { n: 'during the outage' })
    // The watchdog notices: its ping fails and so does its LISTEN.
    await waitFor(() => !h.hub.stats().listening, { what: 'the watchdog to find the LISTEN gone' })
    // The outage's length is the scenario, not a wait for an event: postgres.js retries a lost LISTEN for
    // about 2 s of refused connections and then drops it for good (checked against postgres 3.4.9).
    await Bun.sleep(Math.max(0, downAt + 3_500 - Date.now()))
    await proxy.up()

    // postgres.js reconnects with a growing backoff (up to several seconds after an outage this long).
    const row = await valueWithin(stream, 15_000, 'the notification committed during the outage')
    expect(row.id).toBe(missed)
    expect(h.hub.stats().counters.catchUps).toBeGreaterThanOrEqual(1)
    await waitFor(() => h.hub.stats().listening, { what: 'the LISTEN again' })
    const after = await insertNotification(userA, { n: 'after' })
    expect((await valueWithin(stream, 2_000, 'the notification after the outage')).id).toBe(after)
    ac.abort()
  }, 30_000)

  test('a consumer that falls behind is ended with LiveOverflowError after what was queued', async () => {
    const { hub } = openHub('slow', { limits: { notificationQueue: 3 } })
    const ac = new AbortController()
    const stream = hub.notifications(userA, ac.signal)
    await stream.ready
    const [r] = await other<{ ids: number[] }[]>`
      WITH ins AS (INSERT INTO notifications (user_id, data) SELECT ${userA}, jsonb_build_object('n', g) FROM generate_series(1, 5) g RETURNING id)
      SELECT array_agg(id ORDER BY id) AS ids FROM ins`
    await waitFor(() => hub.stats().counters.overflows === 1, { what: 'the overflow' })
    // Ended at once: no longer counted, nothing more queued for it.
    expect(emptyMaps(hub)).toEqual(EMPTY)
    const got: number[] = []
    let error: unknown
    try {
      for await (const row of stream) got.push(row.id)
    } catch (e) {
      error = e
    }
    expect(got).toEqual(r!.ids.slice(0, 3))
    expect(error).toBeInstanceOf(LiveOverflowError)
    expect((error as Error).message).toContain('fell 3 notifications behind')
    expect(await stream.next()).toEqual({ value: undefined, done: true })
  })
})

describe('jobUpdates', () => {
  test('yields the row now, then PENDING → RUNNING → finished as other connections change it, then ends', async () => {
    const h = openHub('job')
    const id = await insertJob()
    const ac = new AbortController()
    const stream = h.hub.jobUpdates(id, ac.signal, { subscriber: userA })
    const first = await valueWithin(stream, 2_000, 'the current row')
    expect(first.id).toBe(id)
    expect(statusOf(first)).toBe('PENDING')

    // A change that does not move updated_at is not an update; it shows in the next one.
    await other`UPDATE worker_jobs SET data = ${other.json({ seen: 'later' })} WHERE id = ${id}`
    await other`UPDATE worker_jobs SET started = now(), locked_by = 'w1', lease_expires_at = now() + interval '1 minute', updated_at = now() WHERE id = ${id}`
    const running = await valueWithin(stream, 2_000, 'RUNNING')
    expect(statusOf(running)).toBe('RUNNING')
    expect(running.lockedBy).toBe('w1')
    expect(running.data).toEqual({ seen: 'later' })

    await other`UPDATE worker_jobs SET attempt = 2, updated_at = now() WHERE id = ${id}`
    const retried = await valueWithin(stream, 2_000, 'the attempt change')
    expect(statusOf(retried)).toBe('RUNNING')
    expect(retried.attempt).toBe(2)

    await other`
      UPDATE worker_jobs SET finished = now(), success = true, result = ${other.json({ ok: true })}, locked_by = NULL, lease_expires_at = NULL, updated_at = now()
       WHERE id = ${id}`
    const done = await valueWithin(stream, 2_000, 'the finished row')
    expect(statusOf(done)).toBe('SUCCEEDED')
    expect(done.result).toEqual({ ok: true })
    expect(await nextWithin(stream, 2_000, 'the end')).toEqual({ value: undefined, done: true })
    expect(emptyMaps(h.hub)).toEqual(EMPTY)
    await waitFor(() => !h.hub.stats().polling, { what: 'the poller to stop' })
    // Job updates alone never LISTEN.
    expect(h.hub.stats().counters.listens).toBe(0)
    expect(await listenerPidOf(h.app)).toBeNull()
  })

  test('a finished job yields its row and ends; a missing one just ends', async () => {
    const { hub } = openHub('job-done')
    const id = await insertJob()
    await other`UPDATE worker_jobs SET started = now(), finished = now(), success = false, updated_at = now() WHERE id = ${id}`
    const ac = new AbortController()
    const stream = hub.jobUpdates(id, ac.signal, { subscriber: userA })
    expect(statusOf(await valueWithin(stream, 2_000, 'the finished row'))).toBe('FAILED')
    expect((await nextWithin(stream)).done).toBe(true)
    const missing = hub.jobUpdates(2_000_000_000, ac.signal, { subscriber: userA })
    expect(await nextWithin(missing)).toEqual({ value: undefined, done: true })
    expect(emptyMaps(hub)).toEqual(EMPTY)
  })

  test('one poll query for every watched job, and no polling query at all without a job subscription', async () => {
    const h = openHub('poll', { pollMs: 20 })
    const jobQueries = () => h.queries.filter((q) => q.includes('"worker_jobs"')).length
    const ac = new AbortController()
    // Notifications alone never poll jobs.
    const n = h.hub.notifications(userA, ac.signal)
    await n.ready
    const nid = await insertNotification(userA)
    expect((await valueWithin(n, 2_000, 'a notification')).id).toBe(nid)
    expect(jobQueries()).toBe(0)
    expect(h.hub.stats().polling).toBe(false)

    const ids = [await insertJob(), await insertJob(), await insertJob()]
    const jac = new AbortController()
    const streams = ids.map((id) => h.hub.jobUpdates(id, jac.signal, { subscriber: userA }))
    for (const s of streams) expect(statusOf(await valueWithin(s, 2_000, 'a job row'))).toBe('PENDING')
    const from = h.hub.stats().counters.jobPolls
    const queriesFrom = jobQueries()
    await waitFor(() => h.hub.stats().counters.jobPolls >= from + 5, { what: 'five polls' })
    const polls = h.hub.stats().counters.jobPolls - from
    const ran = jobQueries() - queriesFrom
    // Nothing changed: each poll was the one version query for all three ids, and nothing was refetched
    // (± the one poll whose query may be in flight at either reading).
    expect(ran).toBeGreaterThanOrEqual(polls - 1)
    expect(ran).toBeLessThanOrEqual(polls + 1)
    expect(h.queries.slice(-1)[0]).toContain('= ANY(')

    jac.abort()
    await waitFor(() => !h.hub.stats().polling, { what: 'the poller to stop' })
    const idle = jobQueries()
    // Absence can only be seen over a window: ten poll intervals.
    await Bun.sleep(200)
    expect(jobQueries()).toBe(idle)
    expect(h.hub.stats().polling).toBe(false)
    ac.abort()
  })

  test('a consumer that does not read keeps only the latest row (each row is the whole state)', async () => {
    const { hub } = openHub('job-slow')
    const id = await insertJob()
    const ac = new AbortController()
    const stream = hub.jobUpdates(id, ac.signal, { subscriber: userA })
    expect(statusOf(await valueWithin(stream))).toBe('PENDING')
    for (const attempt of [2, 3, 4]) {
      const fetched = hub.stats().counters.jobFetches
      await other`UPDATE worker_jobs SET attempt = ${attempt}, updated_at = now() WHERE id = ${id}`
      await waitFor(() => hub.stats().counters.jobFetches > fetched, { what: `attempt ${attempt} to be fetched` })
    }
    expect(stream.queued).toBe(1)
    expect((await valueWithin(stream)).attempt).toBe(4)
    expect(stream.queued).toBe(0)
    ac.abort()
  })
})

describe('lifecycle and limits', () => {
  test('abort removes the subscriber: pending next() ends and the maps are empty', async () => {
    const { hub } = openHub('abort')
    const job = await insertJob()
    const acs = Array.from({ length: 5 }, () => new AbortController())
    const a1 = hub.notifications(userA, acs[0]!.signal)
    const a2 = hub.notifications(userA, acs[1]!.signal)
    const b1 = hub.notifications(userB, acs[2]!.signal)
    const j1 = hub.jobUpdates(job, acs[3]!.signal, { subscriber: userA })
    const j2 = hub.jobUpdates(job, acs[4]!.signal, { subscriber: 'apiToken' })
    expect(emptyMaps(hub)).toEqual({ notificationSubscriptions: 3, jobSubscriptions: 2, usersWatched: 2, jobsWatched: 1, callersCounted: 3 })
    await Promise.all([a1.ready, a2.ready, b1.ready, j1.ready, j2.ready])

    const pending = a1.next()
    acs[0]!.abort()
    expect(await pending).toEqual({ value: undefined, done: true })
    expect(hub.stats().notificationSubscriptions).toBe(2)
    // a2 is still served.
    const id = await insertNotification(userA)
    expect((await valueWithin(a2)).id).toBe(id)

    for (const ac of acs) ac.abort()
    expect(emptyMaps(hub)).toEqual(EMPTY)
    await waitFor(() => !hub.stats().polling, { what: 'the poller to stop' })

    // Leaving a for-await loop (return()) removes it too; an already-aborted signal counts nothing.
    const ac = new AbortController()
    const loop = hub.notifications(userB, ac.signal)
    await loop.ready
    const bid = await insertNotification(userB)
    for await (const row of loop) {
      expect(row.id).toBe(bid)
      break
    }
    expect(emptyMaps(hub)).toEqual(EMPTY)
    const aborted = hub.jobUpdates(job, AbortSignal.abort(), { subscriber: userA })
    expect(await aborted.next()).toEqual({ value: undefined, done: true })
    expect(emptyMaps(hub)).toEqual(EMPTY)
  })

  test('limits: per caller (both kinds together) and per process throw LiveLimitError', async () => {
    const { hub } = openHub('limits', { limits: { perUser: 3, total: 5 } })
    const job = await insertJob()
    const ac = new AbortController()
    hub.notifications(userA, ac.signal)
    hub.notifications(userA, ac.signal)
    const third = new AbortController()
    hub.jobUpdates(job, third.signal, { subscriber: userA })
    let err: unknown
    try {
      hub.notifications(userA, ac.signal)
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(LiveLimitError)
    expect((err as LiveLimitError).limit).toBe('perUser')
    expect((err as Error).message).toBe(`live updates: user ${userA} already holds 3 subscriptions, the most one caller may (3); end one first`)
    expect(() => hub.jobUpdates(job, ac.signal, { subscriber: userA })).toThrow(LiveLimitError)
    // Another caller still may, up to the process's total.
    hub.notifications(userB, ac.signal)
    hub.jobUpdates(job, ac.signal, { subscriber: 'apiToken' })
    expect(() => hub.jobUpdates(job, ac.signal, { subscriber: 'someone else' })).toThrow(
      'live updates: this server already holds 5 subscriptions, the most it allows (5); try again later',
    )
    expect(hub.stats().notificationSubscriptions + hub.stats().jobSubscriptions).toBe(5)
    // Ending one makes room again.
    third.abort()
    hub.notifications(userA, ac.signal)
    ac.abort()
    expect(emptyMaps(hub)).toEqual(EMPTY)
  })

  test('the default limits: 20 per user, 10,000 per process', async () => {
    expect(MAX_SUBSCRIPTIONS_PER_USER).toBe(20)
    expect(MAX_SUBSCRIPTIONS).toBe(10_000)
    const { hub } = openHub('defaults')
    const ac = new AbortController()
    for (let i = 0; i < MAX_SUBSCRIPTIONS_PER_USER; i++) hub.notifications(userA, ac.signal)
    expect(() => hub.notifications(userA, ac.signal)).toThrow(LiveLimitError)
    ac.abort()
    expect(emptyMaps(hub)).toEqual(EMPTY)
  })

  test('close() ends every iterator and releases the LISTEN', async () => {
    const h = openHub('close')
    const job = await insertJob()
    const ac = new AbortController()
    const n = h.hub.notifications(userA, ac.signal)
    const j = h.hub.jobUpdates(job, ac.signal, { subscriber: userA })
    await n.ready
    expect(statusOf(await valueWithin(j))).toBe('PENDING')
    const pid = await listenerPidOf(h.app)
    expect(pid).not.toBeNull()
    const pendingN = n.next()
    const pendingJ = j.next()
    await h.hub.close()
    expect(await pendingN).toEqual({ value: undefined, done: true })
    expect(await pendingJ).toEqual({ value: undefined, done: true })
    expect(emptyMaps(h.hub)).toEqual(EMPTY)
    expect(h.hub.stats().listening).toBe(false)
    expect(h.hub.stats().polling).toBe(false)
    // The LISTEN connection's last statement is the UNLISTEN; ending the client closes it.
    const [last] = await other<{ query: string }[]>`SELECT query FROM pg_stat_activity WHERE pid = ${pid}`
    expect(last!.query.toLowerCase()).toStartWith('unlisten')
    expect(() => h.hub.notifications(userA, ac.signal)).toThrow('live updates: the hub is closed')
    await h.client.end({ timeout: 1 })
    await waitFor(async () => (await other`SELECT 1 FROM pg_stat_activity WHERE pid = ${pid}`).length === 0, { what: 'the LISTEN connection to close' })
  })
})

/** A TCP proxy to the test Postgres that can go down (connections reset, new ones refused) and come back on its port. */
async function startRefusingProxy() {
  const target = new URL(db.url)
  const sockets = new Set<Socket>()
  let server: Server | null = null
  let port = 0
  const up = () =>
    new Promise<void>((resolve, reject) => {
      const s = createServer((client) => {
        const upstream = createConnection({ host: target.hostname, port: Number(target.port || 5432) })
        const kill = () => {
          client.destroy()
          upstream.destroy()
          sockets.delete(client)
          sockets.delete(upstream)
        }
        for (const sock of [client, upstream]) {
          sockets.add(sock)
          sock.on('error', kill)
          sock.on('close', kill)
        }
        client.pipe(upstream)
        upstream.pipe(client)
      })
      s.once('error', reject)
      s.listen(port, '127.0.0.1', () => {
        port = (s.address() as AddressInfo).port
        server = s
        resolve()
      })
    })
  const down = () =>
    new Promise<void>((resolve) => {
      const s = server
      server = null
      for (const sock of [...sockets]) sock.destroy()
      sockets.clear()
      if (!s) return resolve()
      s.close(() => resolve())
    })
  await up()
  return {
    urlThrough(url: string) {
      const u = new URL(url)
      u.hostname = '127.0.0.1'
      u.port = String(port)
      return u.toString()
    },
    up,
    down,
    close: down,
  }
}
