import { afterAll, beforeAll, expect, test } from 'bun:test'
import { sql } from 'drizzle-orm'
import { compileQuery, createDb, runQuery } from '../../src/server/db/client'
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

test('a compiled statement binds new values per call, on the pool and inside a transaction alike', async () => {
  const echo = compileQuery((v: { a: number; b: string }) => sql`SELECT ${v.a}::int + 1 AS a, ${v.b}::text || '!' AS b`)
  const handle = createDb(db.url, { max: 1 })
  try {
    expect(await echo(handle.db, { a: 1, b: 'x' })).toEqual([{ a: 2, b: 'x!' }])
    expect(await echo(handle.db, { a: 41, b: "o'hara; --" })).toEqual([{ a: 42, b: "o'hara; --!" }])
    const inTx = await handle.db.transaction((tx) => echo(tx, { a: 9, b: 'tx' }))
    expect(inTx.map((r) => ({ ...r }))).toEqual([{ a: 10, b: 'tx!' }])
  } finally {
    await handle.close()
  }
})
