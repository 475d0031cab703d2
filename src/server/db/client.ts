import { fillPlaceholders, type SQL } from 'drizzle-orm'
import { PgDialect } from 'drizzle-orm/pg-core'
import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js'
import postgres from 'postgres'
import * as schema from './schema'

export type Database = PostgresJsDatabase<typeof schema> & { $client: postgres.Sql }
/** A drizzle transaction handle, as given to `db.transaction(async (tx) => …)`. */
export type Transaction = Parameters<Parameters<Database['transaction']>[0]>[0]
/** Anything that can run a query: the database itself or a transaction inside it. */
export type Executor = Database | Transaction

export interface DbHandle {
  db: Database
  client: postgres.Sql
  close(): Promise<void>
}

export interface DbOptions {
  max?: number
  applicationName?: string
  /** Give up connecting after this long (postgres.js waits forever by default). */
  connectTimeoutMs?: number
  /** Postgres cancels any statement of this pool that runs longer (0: no limit). */
  statementTimeoutMs?: number
}

export function createDb(url: string, opts: DbOptions = {}): DbHandle {
  const client = postgres(url, {
    max: opts.max ?? 10,
    onnotice: () => {},
    connect_timeout: Math.max(1, Math.ceil((opts.connectTimeoutMs ?? 10_000) / 1000)),
    connection: {
      application_name: opts.applicationName ?? 'dapp-server',
      ...(opts.statementTimeoutMs ? { statement_timeout: opts.statementTimeoutMs } : {}),
    },
  })
  const db = drizzle(client, { schema })
  return { db, client, close: () => client.end({ timeout: 5 }) }
}

const dialect = new PgDialect()

/**
 * Runs a drizzle `sql` query (values bound as parameters) and returns raw rows. On the root database it
 * runs as a named prepared statement: drizzle's own `execute` sends parameterised statements unprepared,
 * which postgres.js pays for with an extra Describe round trip on every call, and the queue's statements
 * run thousands of times a second. Inside a transaction it falls back to `execute`.
 */
export async function runQuery(db: Executor, query: SQL): Promise<Record<string, unknown>[]> {
  const client = (db as { $client?: postgres.Sql }).$client
  if (!client) return (await db.execute(query)) as unknown as Record<string, unknown>[]
  const { sql: text, params } = dialect.sqlToQuery(query)
  return client.unsafe(text, params as never[], { prepare: true })
}

/**
 * A statement rendered once, with `sql.placeholder(name)` where its values go; each call binds `values`
 * to the same text, as a named prepared statement on the root database. For the statements a worker runs
 * per job: rendering drizzle's template on every call is garbage the collector then pauses for.
 */
export function compileQuery<V extends Record<string, unknown>>(query: SQL): (db: Database, values: V) => Promise<Record<string, unknown>[]> {
  const { sql: text, params } = dialect.sqlToQuery(query)
  return (db, values) => db.$client.unsafe(text, fillPlaceholders(params, values) as never[], { prepare: true })
}
