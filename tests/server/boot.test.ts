import { afterAll, describe, expect, test } from 'bun:test'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { runMigrations } from '../../src/server/db/migrate'
import { createEmptyDatabase, createTestDatabase, type TestDatabase } from '../helpers/db'
import { startServerProcess } from '../helpers/server'
import { waitFor } from '../helpers/wait'

const ROOT = new URL('../..', import.meta.url).pathname
const dbs: TestDatabase[] = []
afterAll(async () => {
  for (const d of dbs) await d.drop()
})

const tables = async (url: string) => {
  const sql = postgres(url, { max: 1, onnotice: () => {} })
  try {
    const rows = await sql`SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename`
    const [trigger] = await sql`SELECT count(*)::int AS n FROM pg_trigger WHERE tgname = 'worker_jobs_notify_insert'`
    const [applied] = await sql`SELECT count(*)::int AS n FROM drizzle.__drizzle_migrations`
    return { tables: rows.map((r) => r.tablename as string), triggers: trigger!.n as number, applied: applied!.n as number }
  } finally {
    await sql.end()
  }
}

describe('migrations', () => {
  test('apply to an empty database and are idempotent', async () => {
    const db = await createEmptyDatabase()
    dbs.push(db)
    await runMigrations(db.url)
    const first = await tables(db.url)
    // Every table the schema has today; a later migration may add more.
    expect(first.tables).toEqual(expect.arrayContaining(['chain_blocks', 'chain_cursors', 'chain_events', 'notifications', 'users', 'worker_jobs', 'worker_servers']))
    expect(first.tables).toContain('worker_jobs')
    expect(first.tables).toContain('users')
    expect(first.triggers).toBe(1)
    expect(first.applied).toBeGreaterThanOrEqual(2)
    await runMigrations(db.url)
    await Promise.all([runMigrations(db.url), runMigrations(db.url)])
    expect(await tables(db.url)).toEqual(first)
  })
})

describe('server process', () => {
  test('npm start migrates an empty database and serves /health with 200', async () => {
    const db = await createEmptyDatabase()
    dbs.push(db)
    const server = await startServerProcess({ DATABASE_URL: db.url, WORKER_COUNT: '1' })
    try {
      const res = await fetch(`${server.url}/health`)
      const body = (await res.json()) as any
      expect(res.status).toBe(200)
      expect(body.status).toBe('ok')
      expect(body.db.ok).toBe(true)
      expect(typeof body.db.latencyMs).toBe('number')
      expect(body.workers).toHaveLength(1)
      expect((await tables(db.url)).tables).toContain('worker_jobs')
    } finally {
      expect(await server.stop()).toBe(0)
    }
  })

  test('/health answers 503 when DATABASE_URL points at a closed port, and the server keeps running', async () => {
    // A port nobody listens on: bind one, note it, close it.
    const probe = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
    const closedPort = probe.port
    probe.stop(true)
    const server = await startServerProcess(
      { DATABASE_URL: `postgres://postgres@127.0.0.1:${closedPort}/nowhere`, WORKER_COUNT: '1' },
      { waitFor: 'server listening' },
    )
    try {
      for (let i = 0; i < 2; i++) {
        const res = await fetch(`${server.url}/health`)
        const body = (await res.json()) as any
        expect(res.status).toBe(503)
        expect(body.status).toBe('degraded')
        expect(body.db.ok).toBe(false)
      }
      expect(server.proc.exitCode).toBeNull()
      // An outage is not a bug: its connection errors are logged with their code, without a stack.
      const failed = () => server.logs.filter((l) => l.msg === 'health: database check failed')
      await waitFor(() => failed().length >= 2, { timeoutMs: 5000, what: 'two failed health checks in the log' })
      for (const l of failed()) {
        expect(l.err.code).toBe('ECONNREFUSED')
        expect(l.err.stack).toBeUndefined()
      }
    } finally {
      expect(await server.stop()).toBe(0)
    }
  })

  test('/health answers 503 when a running server loses its database', async () => {
    // A server cannot boot against a closed port (it migrates first), so make the database of a running
    // server unreachable instead.
    const db = await createTestDatabase()
    dbs.push(db)
    const server = await startServerProcess({ DATABASE_URL: db.url, WORKER_COUNT: '0' })
    try {
      expect((await fetch(`${server.url}/health`)).status).toBe(200)
      const admin = postgres(db.url.replace(/\/[^/]+$/, '/postgres'), { max: 1 })
      // Make the database unreachable for the running server: forbid new connections and end the current ones.
      await admin.unsafe(`ALTER DATABASE "${db.name}" WITH ALLOW_CONNECTIONS false`)
      await admin`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ${db.name}`
      const res = await fetch(`${server.url}/health`)
      const body = (await res.json()) as any
      expect(res.status).toBe(503)
      expect(body.status).toBe('degraded')
      expect(body.db.ok).toBe(false)
      await admin.unsafe(`ALTER DATABASE "${db.name}" WITH ALLOW_CONNECTIONS true`)
      await admin.end()
    } finally {
      await server.stop('SIGKILL')
    }
  })

  test('HOST=::1 listens on the IPv6 loopback and logs a URL that reaches it', async () => {
    const db = await createTestDatabase()
    dbs.push(db)
    const server = await startServerProcess({ DATABASE_URL: db.url, WORKER_COUNT: '0', HOST: '::1' })
    try {
      expect(server.url).toMatch(/^http:\/\/\[::1\]:\d+$/)
      expect((await fetch(`${server.url}/health`)).status).toBe(200)
    } finally {
      expect(await server.stop()).toBe(0)
    }
  })

  test('WORKER_COUNT=-1 stops the boot with exit code 1 and names the variable', async () => {
    const proc = Bun.spawn([process.execPath, 'src/server/index.ts'], {
      cwd: ROOT,
      env: { ...process.env, WORKER_COUNT: '-1' },
      stdout: 'pipe',
      stderr: 'pipe',
    })
    const code = await proc.exited
    const stderr = await new Response(proc.stderr).text()
    expect(code).toBe(1)
    expect(stderr).toContain('WORKER_COUNT')
    expect(stderr.trim().split('\n')).toHaveLength(1)
  })

  test('.env files load in layered order and real env vars win', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'envtest-'))
    writeFileSync(join(dir, '.env'), 'PORT=1111\nWORKER_LOG_LEVEL=debug\nLOG_LEVEL=warn\nWORKER_COUNT=3\n')
    writeFileSync(join(dir, '.env.development'), 'PORT=2222\nLOG_LEVEL=error\n')
    writeFileSync(join(dir, '.env.local'), 'PORT=3333\n')
    writeFileSync(
      join(dir, 'print.ts'),
      `import { loadEnvConfig } from ${JSON.stringify(`${ROOT}src/server/config.ts`)}\nconst c = loadEnvConfig()\nconsole.log(JSON.stringify({ PORT: c.PORT, LOG_LEVEL: c.LOG_LEVEL, WORKER_LOG_LEVEL: c.WORKER_LOG_LEVEL, WORKER_COUNT: c.WORKER_COUNT }))\n`,
    )
    const env: Record<string, string> = { PATH: process.env.PATH ?? '', NODE_ENV: 'development', WORKER_COUNT: '5' }
    const proc = Bun.spawn([process.execPath, 'print.ts'], { cwd: dir, env, stdout: 'pipe' })
    const out = JSON.parse(await new Response(proc.stdout).text())
    expect(out).toEqual({ PORT: 3333, LOG_LEVEL: 'error', WORKER_LOG_LEVEL: 'debug', WORKER_COUNT: 5 })
  })
})
