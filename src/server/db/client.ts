import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js'
import postgres from 'postgres'
import * as schema from './schema'

export type Database = PostgresJsDatabase<typeof schema>
/** A drizzle transaction handle, as given to `db.transaction(async (tx) => …)`. */
export type Transaction = Parameters<Parameters<Database['transaction']>[0]>[0]
/** Anything that can run a query: the database itself or a transaction inside it. */
export type Executor = Database | Transaction

export interface DbHandle {
  db: Database
  client: postgres.Sql
  close(): Promise<void>
}

export function createDb(url: string, opts: { max?: number; applicationName?: string } = {}): DbHandle {
  const client = postgres(url, {
    max: opts.max ?? 10,
    onnotice: () => {},
    connection: { application_name: opts.applicationName ?? 'dapp-server' },
  })
  const db = drizzle(client, { schema })
  return { db, client, close: () => client.end({ timeout: 5 }) }
}
