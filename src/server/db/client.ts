import { fillPlaceholders, type SQL, sql } from 'drizzle-orm'
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
  /**
   * Whether each new connection first reads the array types (postgres.js's default, needed to bind or
   * parse Postgres arrays). Off for a pool that never does (the queue's).
   */
  fetchTypes?: boolean
}

export function createDb(url: string, opts: DbOptions = {}): DbHandle {
  const client = postgres(url, {
    max: opts.max ?? 10,
    fetch_types: opts.fetchTypes ?? true,
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
 * A statement rendered once: `build` is called with a placeholder for every value (`v.name` stands for
 * sql.placeholder('name')), and each call on the root database binds `values` to that same text as a
 * named prepared statement. Inside a transaction (no pool client of its own) it renders `build(values)`,
 * as runQuery does. So `build` must only place its values into the `sql` template, never compute with
 * them or branch on them. For the statements that run once per job or per submit: rendering drizzle's
 * template each time (about 20 KB of garbage for the claim) made the collector pause workers every few
 * dozen jobs, which was the pickup latency's tail.
 */
export function compileQuery<V extends Record<string, unknown>>(build: (values: V) => SQL): (db: Executor, values: V) => Promise<Record<string, unknown>[]> {
  const placeholders = new Proxy({}, { get: (_, name) => sql.placeholder(String(name)) }) as V
  const { sql: text, params } = dialect.sqlToQuery(build(placeholders))
  return (db, values) => {
    const client = (db as { $client?: postgres.Sql }).$client
    if (!client) return runQuery(db, build(values))
    return client.unsafe(text, fillPlaceholders(params, values) as never[], { prepare: true })
  }
}

/**
 * Runs `statements` as one transaction and returns each statement's rows, sending them all at once after
 * BEGIN (postgres.js pipelines queries on a connection when they are issued without awaiting each other):
 * three round trips (BEGIN, the statements, COMMIT) instead of one per statement. The server still runs them
 * in order, each (READ COMMITTED) with a snapshot taken when it starts, so a statement after a lock sees
 * everything committed before the lock was granted. COMMIT is sent only once every statement has answered:
 * a caller that gave up waiting (a timeout, a lost connection) leaves a transaction that rolls back, never
 * one that commits later. If a statement fails, the server ignores the rest, the transaction is rolled back
 * and the first error is thrown. postgres.js's own transaction is used, not a connection reserved by hand:
 * it retires a connection that dies mid-transaction, where releasing a reserved one would return the dead
 * connection to the pool. Inside a transaction (no client of its own) they run one by one there.
 */
export async function pipelinedTransaction(db: Executor, statements: readonly SQL[]): Promise<Record<string, unknown>[][]> {
  const client = (db as { $client?: postgres.Sql }).$client
  if (!client) {
    const out: Record<string, unknown>[][] = []
    for (const s of statements) out.push((await db.execute(s)) as unknown as Record<string, unknown>[])
    return out
  }
  const rows = await client.begin((tx) =>
    statements.map((s) => {
      const { sql: text, params } = dialect.sqlToQuery(s)
      return tx.unsafe(text, params as never[], { prepare: true })
    }),
  )
  return rows as unknown as Record<string, unknown>[][]
}
