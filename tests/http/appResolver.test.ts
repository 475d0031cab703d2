import { afterAll, beforeAll, expect, test } from 'bun:test'
import postgres from 'postgres'
import { newWallet, signIn } from '../helpers/auth'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type ServerProcess, startServerProcess } from '../helpers/server'
import { waitFor } from '../helpers/wait'
import { gql } from './client'

/** The README's example resolver (tests/fixtures/appGraphql.ts), in a server started with it. */

let db: TestDatabase
let server: ServerProcess
let sql: postgres.Sql

beforeAll(async () => {
  db = await createTestDatabase('app_resolver')
  server = await startServerProcess(
    { DATABASE_URL: db.url, WORKER_COUNT: '1', CRON_REMOVE_OLD_WORKER_JOBS: 'off' },
    { entry: new URL('../fixtures/appServer.ts', import.meta.url).pathname },
  )
  sql = postgres(db.url, { max: 2, onnotice: () => {} })
})

afterAll(async () => {
  await server?.stop()
  await sql?.end()
  await db?.drop()
})

const REQUEST = `mutation ($label: String!) { requestReport(label: $label) { id userId status } }`

test("an application's resolver writes its row and submits a job in one transaction", async () => {
  const user = await signIn(server.url, newWallet())
  const res = await gql(server.url, REQUEST, { label: 'monthly' }, { token: user.token })
  expect(res.errors).toBeUndefined()
  const job = res.data.requestReport
  expect(job.userId).toBe(user.userId)
  await waitFor(async () => (await sql`SELECT success FROM worker_jobs WHERE id = ${job.id} AND finished IS NOT NULL`)[0]?.success === true)
  const [note] = await sql`SELECT n.id, n.data FROM notifications n JOIN worker_jobs j ON (j.data->>'notificationId')::int = n.id WHERE j.id = ${job.id}`
  expect(note!.data).toEqual({ kind: 'reportRequested', label: 'monthly' })
})

test('a refused job rolls the whole transaction back: no job and no row of its own', async () => {
  const user = await signIn(server.url, newWallet())
  const res = await gql(server.url, REQUEST, { label: 'x'.repeat(101) }, { token: user.token })
  expect(res.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'data.label' })
  expect(await sql`SELECT 1 FROM notifications WHERE user_id = ${user.userId}`).toHaveLength(0)
  expect(await sql`SELECT 1 FROM worker_jobs WHERE user_id = ${user.userId}`).toHaveLength(0)
})

test('it needs a session like every mutation', async () => {
  const res = await gql(server.url, REQUEST, { label: 'x' }, { token: null })
  expect(res.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED')
})
