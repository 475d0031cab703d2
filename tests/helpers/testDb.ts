import type postgres from 'postgres'
import { createDb, type DbHandle } from '../../src/server/db/client'
import { createTestDatabase, type TestDatabase } from './db'
import { sqlClient } from './engine'

/**
 * A test file's database with the two clients most query-level tests use: `sql` (postgres.js) to arrange
 * rows and read them back, and `handle`, a drizzle pool of `max` connections for the code under test. With
 * max 1, statistics counters read on `handle` are the backend's own (see plans.ts, indexTuplesRead).
 */
export async function openTestDb(prefix: string, max: number): Promise<{ db: TestDatabase; sql: postgres.Sql; handle: DbHandle; close(): Promise<void> }> {
  const db = await createTestDatabase(prefix)
  const sql = sqlClient(db.url)
  const handle = createDb(db.url, { max })
  return {
    db,
    sql,
    handle,
    async close() {
      await handle.close()
      await sql.end()
      await db.drop()
    },
  }
}
