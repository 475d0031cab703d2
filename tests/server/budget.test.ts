import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import postgres from 'postgres'
import { ConfigError } from '../../src/server/config'
import { checkConnectionBudget, connectionBudget, LISTEN_CONNECTIONS, LIVE_LISTEN_CONNECTIONS, QUEUE_POOL_SIZE } from '../../src/server/db/budget'
import { createTestDatabase, type TestDatabase } from '../helpers/db'

describe('connectionBudget', () => {
  test('main pool + live hub LISTEN + per child (queue pool + handler pool + LISTEN)', () => {
    expect(QUEUE_POOL_SIZE).toBe(3)
    expect(LISTEN_CONNECTIONS).toBe(1)
    expect(LIVE_LISTEN_CONNECTIONS).toBe(1)
    expect(connectionBudget({ DB_POOL_SIZE: 10, WORKER_COUNT: 2, WORKER_DB_POOL_SIZE: 3 })).toBe(25)
    expect(connectionBudget({ DB_POOL_SIZE: 10, WORKER_COUNT: 32, WORKER_DB_POOL_SIZE: 3 })).toBe(235)
    // No children: the main pool and the hub's LISTEN still count.
    expect(connectionBudget({ DB_POOL_SIZE: 5, WORKER_COUNT: 0, WORKER_DB_POOL_SIZE: 100 })).toBe(6)
    expect(connectionBudget({ DB_POOL_SIZE: 1, WORKER_COUNT: 4, WORKER_DB_POOL_SIZE: 1 })).toBe(22)
  })
})

describe('checkConnectionBudget against the real Postgres', () => {
  let db: TestDatabase
  let sql: postgres.Sql
  let other: postgres.Sql
  beforeAll(async () => {
    db = await createTestDatabase('budget')
    sql = postgres(db.url, { max: 1, onnotice: () => {} })
    // Another client holding a connection: it must count as in use.
    other = postgres(db.url, { max: 1, onnotice: () => {} })
    await other`SELECT 1`
  })
  afterAll(async () => {
    await sql.end()
    await other.end()
    await db.drop()
  })

  test('reads the limits of the server and counts the other clients', async () => {
    const room = await checkConnectionBudget(sql, { DB_POOL_SIZE: 1, WORKER_COUNT: 0, WORKER_DB_POOL_SIZE: 1 })
    const [s] = await sql`SELECT current_setting('max_connections')::int AS max, current_setting('superuser_reserved_connections')::int AS su`
    expect(room.needed).toBe(2)
    expect(room.maxConnections).toBe(s!.max)
    expect(room.reserved).toBeGreaterThanOrEqual(s!.su)
    expect(room.inUse).toBeGreaterThanOrEqual(1)
    expect(room.free).toBe(Math.max(0, room.maxConnections - room.reserved - room.inUse))
  })

  test('a budget larger than max_connections is refused with one line', async () => {
    let err: unknown
    try {
      await checkConnectionBudget(sql, { DB_POOL_SIZE: 1000, WORKER_COUNT: 256, WORKER_DB_POOL_SIZE: 100 })
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(ConfigError)
    const msg = (err as Error).message
    expect(msg).toStartWith('connection budget: this server needs 27625 connections (DB_POOL_SIZE 1000 + 1 live LISTEN + 256 workers × 104: 3 queue + WORKER_DB_POOL_SIZE 100 + 1 LISTEN)')
    expect(msg).toContain('raise max_connections')
    expect(msg.includes('\n')).toBe(false)
  })
})
