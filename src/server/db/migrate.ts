import { fileURLToPath } from 'node:url'
import { sql } from 'drizzle-orm'
import { migrate } from 'drizzle-orm/postgres-js/migrator'
import { createDb } from './client'

export const MIGRATIONS_FOLDER = fileURLToPath(new URL('../../../drizzle', import.meta.url))

/** Arbitrary but fixed key of the session advisory lock that serialises migrations. */
const MIGRATION_LOCK_KEY = 727_001

/**
 * Applies the migrations in drizzle/ that the database has not seen yet. Idempotent: drizzle records what
 * it applied in drizzle.__drizzle_migrations. Why the advisory lock and the single connection: two servers
 * booting together against one database would otherwise both try to create the same tables; the lock is
 * per session, so the lock and the migration must share one connection (max: 1).
 */
export async function runMigrations(databaseUrl: string): Promise<void> {
  const handle = createDb(databaseUrl, { max: 1, applicationName: 'dapp-server-migrate' })
  try {
    await handle.db.execute(sql`SELECT pg_advisory_lock(${MIGRATION_LOCK_KEY})`)
    try {
      await migrate(handle.db, { migrationsFolder: MIGRATIONS_FOLDER })
    } finally {
      await handle.db.execute(sql`SELECT pg_advisory_unlock(${MIGRATION_LOCK_KEY})`)
    }
  } finally {
    await handle.close()
  }
}
