import { afterAll, beforeAll, expect, test } from 'bun:test'
import { sql } from 'drizzle-orm'
import { runQuery } from '../../src/server/db/client'
import { QueueDb } from '../../src/server/workers/queueDb'
import { createTestDatabase, type TestDatabase } from '../helpers/db'

/**
 * The queue's pool (queueDb.ts): no array-type query on connect. postgres.js runs that query
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
const typeQueries = () =>
  queue.run(async (d) => {
    const rows = await runQuery(d, sql`SELECT count(*)::int AS n FROM pg_prepared_statements WHERE statement LIKE ${'%typarray%'}`)
    return rows[0]!.n
  })

test('no connection of the pool reads the array types when it opens', async () => {
  // Three at once: the pool opens all three of its connections, and none ran the query.
  expect(await Promise.all([typeQueries(), typeQueries(), typeQueries()])).toEqual([0, 0, 0])
})
