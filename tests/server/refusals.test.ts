import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { startServerProcess, TEST_ENV } from '../helpers/server'

/**
 * A server that cannot work must say so at boot: exit code 1 and one line naming the cause, with no
 * secret in it. Each case runs the real entry point as a child process; a deadline kills one that keeps
 * running (what each of these did before: started anyway, or retried forever).
 */
const ROOT = new URL('../..', import.meta.url).pathname
const FIXTURE = new URL('../fixtures/server.ts', import.meta.url).pathname

async function runToExit(cmd: string[], env: Record<string, string>, opts: { cwd?: string; timeoutMs?: number } = {}) {
  const proc = Bun.spawn(cmd, { cwd: opts.cwd ?? ROOT, env, stdout: 'pipe', stderr: 'pipe' })
  const deadline = setTimeout(() => proc.kill('SIGKILL'), opts.timeoutMs ?? 15_000)
  const [code, stdout, stderr] = await Promise.all([proc.exited, new Response(proc.stdout).text(), new Response(proc.stderr).text()])
  clearTimeout(deadline)
  return { code, stdout, stderr, lines: `${stdout}${stderr}`.split('\n').filter((l) => l.trim() !== '') }
}

describe('a bad variable stops `npm start` with exit 1 and one masked line', () => {
  // A directory without .env files, so only the variables given here count.
  const cwd = mkdtempSync(join(tmpdir(), 'refusals-'))
  // Valid service URLs (nothing listens on the database port), so no development service is started and
  // a server that wrongly accepts the bad variable keeps retrying the database until the deadline.
  const base = { PATH: process.env.PATH ?? '', ...TEST_ENV, DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none', WORKER_COUNT: '0' }
  const N = 'FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141'
  const KEY_ZERO = `0x${'0'.repeat(64)}`

  test.each([
    ['WORKER_COUNT', '100000', null],
    ['CHAIN_RPC_URL', 'ftp://x', null],
    ['CHAIN_RPC_URL', 'file:///etc/passwd', null],
    ['CHAIN_RPC_URL', 'ftp://rpcuser:rpcs3cret@x', 'rpcs3cret'],
    ['SERVER_WALLET_PRIVATE_KEY', KEY_ZERO, '0000000000'],
    ['SERVER_WALLET_PRIVATE_KEY', `0x${N}`, 'FFFFFFFF'],
    ['SERVER_WALLET_PRIVATE_KEY', '0xdeadbeef', 'deadbeef'],
    ['CRON_WATCH_CHAIN', '0 0 30 2 *', null],
    ['HOST', '999.1.1.1', null],
    ['DATABASE_URL', 'postgres://u:s3cretpw@h:99999/db', 's3cretpw'],
    ['DATABASE_URL', 'postgres://u:s3cretpw@h:abc/db', 's3cretpw'],
  ])('%s=%s', async (name, value, secret) => {
    const { code, lines } = await runToExit([process.execPath, join(ROOT, 'src/server/index.ts')], { ...base, [name]: value }, { cwd })
    expect(code).toBe(1)
    expect(lines).toHaveLength(1)
    expect(lines[0]).toStartWith(`Invalid environment variable ${name}: `)
    if (secret) expect(lines[0]).not.toContain(secret)
  })

  test('the messages say why', async () => {
    const run = async (env: Record<string, string>) =>
      (await runToExit([process.execPath, join(ROOT, 'src/server/index.ts')], { ...base, ...env }, { cwd })).lines[0]
    expect(await run({ CRON_WATCH_CHAIN: '0 0 30 2 *' })).toContain('has no future run')
    expect(await run({ DATABASE_URL: 'postgres://u:s3cretpw@h:99999/db' })).toBe(
      'Invalid environment variable DATABASE_URL: port 99999 is out of range 1..65535 (got "postgres://u:***@h:99999/db")',
    )
  })
})

describe('refusals that need the real database and network', () => {
  let db: TestDatabase
  beforeAll(async () => {
    db = await createTestDatabase('refusals')
  })
  afterAll(async () => {
    await db.drop()
  })

  test('a second server on a taken HOST:PORT exits 1 with one line; the first keeps serving', async () => {
    const first = await startServerProcess({ DATABASE_URL: db.url, WORKER_COUNT: '0' })
    try {
      const port = new URL(first.url).port
      const second = await runToExit([process.execPath, FIXTURE], { ...process.env, ...TEST_ENV, DATABASE_URL: db.url, WORKER_COUNT: '0', PORT: port } as Record<string, string>)
      expect(second.code).toBe(1)
      expect(second.lines).toEqual([`PORT ${port} on 127.0.0.1 is already in use`])
      expect((await fetch(`${first.url}/health`)).status).toBe(200)
    } finally {
      expect(await first.stop()).toBe(0)
    }
  })

  test.each([
    [{ WORKER_COUNT: '200' }, 'needs 1411 connections (DB_POOL_SIZE 10 + 1 live LISTEN + 200 workers × 7'],
    [{ WORKER_COUNT: '0', DB_POOL_SIZE: '1000' }, 'needs 1001 connections (DB_POOL_SIZE 1000 + 1 live LISTEN + 0 workers × 7'],
  ])('a connection budget Postgres cannot fit (%p) exits 1 with one line, before any worker starts', async (env, needs) => {
    const run = await runToExit([process.execPath, FIXTURE], { ...process.env, ...TEST_ENV, DATABASE_URL: db.url, ...env } as Record<string, string>)
    expect(run.code).toBe(1)
    const errLines = run.stderr.split('\n').filter((l) => l.trim() !== '')
    expect(errLines).toHaveLength(1)
    expect(errLines[0]).toStartWith(`connection budget: this server ${needs}: 3 queue + WORKER_DB_POOL_SIZE 3 + 1 LISTEN) but Postgres has `)
    expect(errLines[0]).toMatch(/free \(max_connections \d+ - \d+ reserved - \d+ in use by other clients\); lower WORKER_COUNT, DB_POOL_SIZE or WORKER_DB_POOL_SIZE, or raise max_connections$/)
    // The boot got as far as the database (it listened and migrated) but spawned no child, logged no stack.
    const logs = run.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg: string })
    expect(logs.map((l) => l.msg)).toContain('server listening')
    expect(logs.map((l) => l.msg)).not.toContain('worker started')
    expect(run.stdout).not.toContain('boot failed')
  })
})
