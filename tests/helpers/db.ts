import { createHash } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import postgres from 'postgres'
import { runMigrations, MIGRATIONS_FOLDER } from '../../src/server/db/migrate'

/**
 * The server that test databases live on: CI runs Postgres on 127.0.0.1:5432 with trust auth; without one there
 * the preload tests/setup/database.ts starts an embedded Postgres and sets TEST_DATABASE_ADMIN_URL to it first.
 */
export const ADMIN_URL = process.env.TEST_DATABASE_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'

export function urlFor(dbName: string): string {
  const u = new URL(ADMIN_URL)
  u.pathname = `/${dbName}`
  return u.toString()
}

/** The template's name carries a hash of the migrations, so a changed migration builds a new template. */
function templateName(): string {
  const h = createHash('sha256')
  for (const f of readdirSync(MIGRATIONS_FOLDER, { recursive: true }).map(String).sort()) {
    if (f.endsWith('.sql') || f.endsWith('.json')) h.update(f).update(readFileSync(join(MIGRATIONS_FOLDER, f)))
  }
  return `worker_tpl_${h.digest('hex').slice(0, 12)}`
}

let templateReady: Promise<string> | null = null

/** Creates (once, under an advisory lock so parallel test processes agree) the migrated template database. */
function ensureTemplate(): Promise<string> {
  templateReady ??= (async () => {
    const name = templateName()
    const admin = postgres(ADMIN_URL, { max: 1, onnotice: () => {} })
    try {
      await admin`SELECT pg_advisory_lock(727002)`
      const [exists] = await admin`SELECT 1 FROM pg_database WHERE datname = ${name}`
      if (!exists) {
        const building = `${name}_building`
        await admin.unsafe(`DROP DATABASE IF EXISTS "${building}" WITH (FORCE)`)
        await admin.unsafe(`CREATE DATABASE "${building}"`)
        await runMigrations(urlFor(building))
        await admin.unsafe(`ALTER DATABASE "${building}" RENAME TO "${name}"`)
      }
      await admin`SELECT pg_advisory_unlock(727002)`
    } finally {
      await admin.end()
    }
    return name
  })()
  return templateReady
}

export interface TestDatabase {
  name: string
  url: string
  drop(): Promise<void>
}

/** A fresh database for one test file, cloned from the migrated template. Drop it in afterAll. */
export async function createTestDatabase(prefix = 'test'): Promise<TestDatabase> {
  const template = await ensureTemplate()
  const name = `${prefix}_${process.pid}_${Math.random().toString(36).slice(2, 8)}`.toLowerCase().replace(/[^a-z0-9_]/g, '_')
  const admin = postgres(ADMIN_URL, { max: 1, onnotice: () => {} })
  try {
    // Identifiers cannot be bound parameters; both names are generated above from [a-z0-9_] only.
    await admin.unsafe(`CREATE DATABASE "${name}" TEMPLATE "${template}"`)
  } finally {
    await admin.end()
  }
  return { name, url: urlFor(name), drop: () => dropDatabase(name) }
}

/** An empty database (no migrations), for migration tests. */
export async function createEmptyDatabase(prefix = 'empty'): Promise<TestDatabase> {
  const name = `${prefix}_${process.pid}_${Math.random().toString(36).slice(2, 8)}`
  const admin = postgres(ADMIN_URL, { max: 1, onnotice: () => {} })
  try {
    await admin.unsafe(`CREATE DATABASE "${name}"`)
  } finally {
    await admin.end()
  }
  return { name, url: urlFor(name), drop: () => dropDatabase(name) }
}

async function dropDatabase(name: string): Promise<void> {
  const admin = postgres(ADMIN_URL, { max: 1, onnotice: () => {} })
  try {
    await admin.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
  } finally {
    await admin.end()
  }
}
