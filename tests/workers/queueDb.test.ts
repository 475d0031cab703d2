import { afterAll, beforeAll, expect, test } from 'bun:test'
import { sql } from 'drizzle-orm'
import { runQuery } from '../../src/server/db/client'
import { QueueDb } from '../../src/server/workers/queueDb'
import { createTestDatabase, type TestDatabase } from '../helpers/db'

/**
 * The queue's pool (queueDb.ts): its lanes, and no array-type query on connect. postgres.js runs that query
 * with nobody awaiting it, so when the pool was replaced past its deadline right after opening a connection
 * (a black-holed database), its rejection went unhandled and killed the child.
 */
let db: TestDatabase
let queue: QueueDb

beforeAll(async () => {
  db = await createTestDatabase('queuedb')
  queue = new QueueDb(db.url, { max: 3, applicationName: 'queue-db-test' }, 5000)
})
afterAll(async () => {
  await queue?.close()
  await db?.drop()
})

// The array-type query is a named prepared statement of the connection that ran it.
const typeQueries = (lane: 'claim' | 'write') =>
  queue.run(async (d) => {
    const rows = await runQuery(d, sql`SELECT count(*)::int AS n FROM pg_prepared_statements WHERE statement LIKE ${'%typarray%'}`)
    return rows[0]!.n
  }, lane)

test('no connection of either lane reads the array types when it opens', async () => {
  expect(await typeQueries('claim')).toBe(0)
  expect(await typeQueries('write')).toBe(0)
})

test('the claim lane is one connection of its own, apart from the writes', async () => {
  const backend = (lane: 'claim' | 'write') =>
    queue.run(async (d) => Number((await runQuery(d, sql`SELECT pg_backend_pid() AS pid`))[0]!.pid), lane)
  const claims = new Set(await Promise.all([backend('claim'), backend('claim'), backend('claim')]))
  // Three writes at once: the write lane opens its second connection, never the claim's.
  const writes = new Set(await Promise.all([backend('write'), backend('write'), backend('write')]))
  expect(claims.size).toBe(1)
  expect(writes.size).toBe(2)
  expect([...writes].some((p) => claims.has(p))).toBe(false)
})
