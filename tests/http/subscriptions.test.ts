import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from 'bun:test'
import postgres from 'postgres'
import { privateKeyToAccount } from 'viem/accounts'
import { ANVIL_KEYS, type Anvil, startAnvil } from '../helpers/anvil'
import { newWallet, signIn } from '../helpers/auth'
import { setupTokenFixture, type TokenFixture, transfer } from '../helpers/chainFixture'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type ServerProcess, startServerProcess } from '../helpers/server'
import { gql } from './client'
import { subscribe } from './sse'

/**
 * Live updates across server instances: the subscriber is on server A, which runs no workers; the job
 * that writes the notification (watchChain) runs in a child process of server B. Only Postgres connects them.
 */

setDefaultTimeout(120_000)

let anvil: Anvil
let db: TestDatabase
let sql: postgres.Sql
let fixture: TokenFixture
let a: ServerProcess
let b: ServerProcess

beforeAll(async () => {
  ;[anvil, db] = await Promise.all([startAnvil(), createTestDatabase('live')])
  sql = postgres(db.url, { max: 2, onnotice: () => {} })
  fixture = await setupTokenFixture(anvil.client, db.url, 2)
  const start = String(await anvil.client.getBlockNumber())
  const common = { DATABASE_URL: db.url, CHAIN_RPC_URL: anvil.url, CHAIN_START_BLOCK: start, CRON_REMOVE_OLD_WORKER_JOBS: 'off' }
  ;[a, b] = await Promise.all([
    startServerProcess({ ...common, WORKER_COUNT: '0', CRON_WATCH_CHAIN: 'off' }),
    startServerProcess({ ...common, WORKER_COUNT: '1', CRON_WATCH_CHAIN: '* * * * * *' }),
  ])
})

afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()])
  await fixture?.sql.end()
  await sql?.end()
  await anvil?.stop()
  await db?.drop()
})

// The fixture's users are anvil accounts 1 and 2: signing in with their keys finds their rows.
const wallet = (i: 1 | 2) => privateKeyToAccount(ANVIL_KEYS[i])

describe('subscriptions', () => {
  test('a notification committed by watchChain on server B reaches its user subscribed on server A within 1 s', async () => {
    const [one, two] = await Promise.all([signIn(a.url, wallet(1)), signIn(a.url, wallet(2))])
    expect(one.userId).toBe(fixture.users[0]!.id)
    const NOTIFIED = `subscription { notificationAdded { id userId data createdAt } }`
    const [subOne, subTwo] = await Promise.all([subscribe(a.url, NOTIFIED, {}, one.token), subscribe(a.url, NOTIFIED, {}, two.token)])
    try {
      // A transfer from the stranger to user one only: user two must hear nothing of it.
      await transfer(fixture, fixture.stranger, fixture.users[0]!.address, 5n)
      const event = await subOne.next(30_000)
      const heardAt = Date.now()
      expect(event.errors).toBeUndefined()
      const n = event.data!.notificationAdded
      expect(n.userId).toBe(one.userId)
      const [row] = await sql`SELECT user_id, data FROM notifications WHERE id = ${n.id}`
      expect(row!.user_id).toBe(one.userId)
      expect(n.data).toEqual(row!.data)
      // created_at is set inside watchChain's transaction, a little before its commit: an upper bound.
      const latency = heardAt - new Date(n.createdAt).getTime()
      console.log(`notification ${n.id}: heard on server A ${latency} ms after watchChain on server B wrote it`)
      expect(latency).toBeLessThan(1000)
      // Now one for user two: it is the first thing user two's stream carries.
      await transfer(fixture, fixture.stranger, fixture.users[1]!.address, 6n)
      const forTwo = await subTwo.next(30_000)
      expect(forTwo.data!.notificationAdded.userId).toBe(two.userId)
    } finally {
      subOne.close()
      subTwo.close()
    }
  })

  test('jobUpdated follows a job run on the other server until it finishes; another user may not subscribe', async () => {
    const user = await signIn(a.url, newWallet())
    const other = await signIn(a.url, newWallet())
    const due = new Date(Date.now() + 1500).toISOString()
    const submitted = await gql(a.url, `mutation ($input: SubmitJobInput!) { submitJob(input: $input) { id } }`, { input: { type: 'sleep', data: { ms: 300 }, due } }, { token: user.token })
    expect(submitted.errors).toBeUndefined()
    const id = submitted.data.submitJob.id
    const denied = await subscribe(a.url, `subscription ($id: ID!) { jobUpdated(id: $id) { id status } }`, { id }, other.token)
    const refusal = await denied.next()
    expect(refusal.errors?.[0]?.extensions?.code).toBe('NOT_FOUND')
    denied.close()
    const sub = await subscribe(a.url, `subscription ($id: ID!) { jobUpdated(id: $id) { id status } }`, { id }, user.token)
    const seen: string[] = []
    try {
      while (!['SUCCEEDED', 'FAILED'].includes(seen.at(-1) ?? '')) {
        const e = await sub.next(15_000)
        expect(e.errors).toBeUndefined()
        seen.push(e.data!.jobUpdated.status)
      }
    } finally {
      sub.close()
    }
    expect(seen[0]).toBe('PENDING')
    expect(seen.at(-1)).toBe('SUCCEEDED')
    // Each state once, in order (RUNNING may be missed only if the whole run fits between two polls).
    expect(seen.filter((s, i) => seen.indexOf(s) !== i)).toEqual([])
    const [row] = await sql`SELECT locked_by FROM worker_jobs WHERE id = ${id}`
    expect(String(row!.locked_by)).not.toContain(`/${a.proc.pid}/`)
  })

  test('a subscription without a session is refused', async () => {
    const sub = await subscribe(a.url, `subscription { notificationAdded { id } }`, {}, null)
    const e = await sub.next()
    expect(e.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED')
    sub.close()
  })
})
