import postgres from 'postgres'

/** The Postgres every system shares; each system gets its own database on it. */
export const ADMIN_URL = process.env.BENCH_DATABASE_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'

export function urlFor(dbName: string): string {
  const u = new URL(ADMIN_URL)
  u.pathname = `/${dbName}`
  return u.toString()
}

export function connect(url: string, max = 1): postgres.Sql {
  return postgres(url, { max, onnotice: () => {}, connection: { application_name: 'bench' } })
}

/** Drops (forcefully) and creates an empty database. Names are fixed bench_* identifiers. */
export async function recreateDatabase(name: string): Promise<string> {
  if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`bad database name ${name}`)
  const admin = connect(ADMIN_URL)
  try {
    await admin.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
    await admin.unsafe(`CREATE DATABASE "${name}"`)
  } finally {
    await admin.end()
  }
  return urlFor(name)
}

export async function dropDatabase(name: string): Promise<void> {
  const admin = connect(ADMIN_URL)
  try {
    await admin.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
  } finally {
    await admin.end()
  }
}

/**
 * Committed plus rolled-back transactions of one database so far. Read from the admin database, so the
 * reading itself is not counted. Backends flush their counters at most once a second when they go idle.
 */
export async function transactionCount(admin: postgres.Sql, dbName: string): Promise<number> {
  await admin`SELECT pg_stat_clear_snapshot()`
  const [row] = await admin`SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = ${dbName}`
  return Number(row?.n ?? 0)
}

/** VACUUM ANALYZE of a whole database, so earlier runs' dead rows and autovacuum do not weigh on the next scenario. */
export async function vacuumDatabase(dbName: string): Promise<void> {
  const db = connect(urlFor(dbName))
  try {
    await db`VACUUM ANALYZE`
  } finally {
    await db.end()
  }
}

/** Postgres' own version string, for the report. */
export async function serverVersion(): Promise<string> {
  const admin = connect(ADMIN_URL)
  try {
    const [row] = await admin`SHOW server_version`
    return String(row?.server_version)
  } finally {
    await admin.end()
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
