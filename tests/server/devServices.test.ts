import { afterAll, describe, expect, test } from 'bun:test'
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Subprocess } from 'bun'
import postgres from 'postgres'
import { isAlive } from '../../src/server/dev/processes'
import { waitFor } from '../helpers/wait'

/**
 * The one-command start: the real server (`bun src/server/index.ts`) with neither DATABASE_URL nor
 * CHAIN_RPC_URL starts an embedded Postgres and a local anvil, runs its boot job on them, and leaves no
 * process behind however it ends.
 */

const ENTRY = new URL('../../src/server/index.ts', import.meta.url).pathname
// As root, Postgres runs as the postgres user, which must be able to enter the data directory.
const dataDir = mkdtempSync(join(tmpdir(), 'devservices-'))
chmodSync(dataDir, 0o755)
afterAll(() => rmSync(dataDir, { recursive: true, force: true }))

interface Spawned {
  proc: Subprocess<'ignore', 'pipe', 'pipe'>
  logs: Record<string, any>[]
  stderr: Promise<string>
  log(msg: string): Promise<Record<string, any>>
}

/**
 * Spawns the server with an environment built from scratch, so no DATABASE_URL or CHAIN_RPC_URL can leak in
 * from the test runner's; it runs in the data directory, where no .env file exists for Bun to load.
 */
function spawnServer(env: Record<string, string>): Spawned {
  const proc = Bun.spawn([process.execPath, ENTRY], {
    cwd: dataDir,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', HOST: '127.0.0.1', PORT: '0', WORKER_COUNT: '1', DEV_DATA_DIR: dataDir, ...env },
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const logs: Record<string, any>[] = []
  void (async () => {
    let buf = ''
    const decoder = new TextDecoder()
    const reader = proc.stdout.getReader()
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      buf += decoder.decode(value, { stream: true })
      const lines = buf.split('\n')
      buf = lines.pop() ?? ''
      for (const l of lines) logs.push(JSON.parse(l))
    }
  })()
  const stderr = new Response(proc.stderr).text()
  const log = (msg: string) =>
    Promise.race([
      waitFor(() => logs.find((l) => l.msg === msg), { timeoutMs: 60_000, intervalMs: 25, what: `log "${msg}"` }),
      proc.exited.then(async (code): Promise<never> => {
        throw new Error(`server exited with ${code} before logging "${msg}": ${JSON.stringify(logs.at(-1))} ${await stderr}`)
      }),
    ])
  return { proc, logs, stderr, log }
}

async function deployJob(url: string) {
  const sql = postgres(url, { max: 1, onnotice: () => {} })
  try {
    return await waitFor(
      async () => {
        const [row] = await sql`SELECT id, success, result FROM worker_jobs WHERE type = 'deployMulticall3' AND finished IS NOT NULL ORDER BY id DESC LIMIT 1`
        return row
      },
      { timeoutMs: 30_000, intervalMs: 50, what: 'the deployMulticall3 job to finish' },
    )
  } finally {
    await sql.end()
  }
}

const gone = (pid: number, what: string) => waitFor(() => !isAlive(pid), { timeoutMs: 20_000, intervalMs: 25, what: `${what} (pid ${pid}) to be gone` })

describe('development without DATABASE_URL and CHAIN_RPC_URL', () => {
  let firstJobId = 0

  test('starts an embedded Postgres and anvil, boots on them, and stops them on SIGTERM', async () => {
    const server = spawnServer({ NODE_ENV: 'development' })
    try {
      const ready = await server.log('server ready')
      // One line per service, with its URL.
      const [pg, ...morePg] = server.logs.filter((l) => l.msg === 'started embedded Postgres')
      const [chain, ...moreChains] = server.logs.filter((l) => l.msg === 'started anvil')
      expect(morePg).toEqual([])
      expect(moreChains).toEqual([])
      if (!pg || !chain) throw new Error('a service was not logged')
      expect(server.logs.some((l) => l.msg === 'creating the embedded Postgres data directory')).toBe(true)
      expect(pg.url).toMatch(/^postgres:\/\/postgres@127\.0\.0\.1:\d+\/dapp$/)
      expect(pg.dataDir).toBe(join(dataDir, 'postgres'))
      expect(chain.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
      expect(isAlive(pg.postgresPid)).toBe(true)
      expect(isAlive(chain.anvilPid)).toBe(true)

      const res = await fetch(`${ready.url}/health`)
      const body = (await res.json()) as any
      expect(res.status).toBe(200)
      expect(body.db.ok).toBe(true)
      expect(body.workers).toHaveLength(1)

      // The boot job ran in the worker child, on the chain and database the parent started.
      const job = await deployJob(pg.url)
      expect(job.success).toBe(true)
      expect(job.result.action).toBe('deployed')
      firstJobId = Number(job.id)

      server.proc.kill('SIGTERM')
      expect(await server.proc.exited).toBe(0)
      await gone(pg.postgresPid, 'the embedded Postgres')
      await gone(chain.anvilPid, 'anvil')
    } finally {
      server.proc.kill('SIGKILL')
    }
  }, 90_000)

  test('reuses its data despite a stale postmaster.pid, and a SIGKILLed server leaves no service running', async () => {
    expect(firstJobId).toBeGreaterThan(0)
    // A crashed run's lock whose pid now belongs to another live process of the postgres user: Postgres
    // alone would refuse to start ("Is another postmaster running?").
    const pgDir = join(dataDir, 'postgres')
    const { uid, gid } = statSync(pgDir)
    const squatter = Bun.spawn(['sleep', '600'], { uid, gid, stdin: 'ignore', stdout: 'ignore', stderr: 'ignore' })
    writeFileSync(join(pgDir, 'postmaster.pid'), `${squatter.pid}\n${pgDir}\n0\n54329\n\n127.0.0.1\n0 0\nready\n`)
    const server = spawnServer({ NODE_ENV: 'development' })
    try {
      await server.log('server ready')
      expect(server.logs.some((l) => l.msg === 'creating the embedded Postgres data directory')).toBe(false)
      const pg = server.logs.find((l) => l.msg === 'started embedded Postgres')!
      const chain = server.logs.find((l) => l.msg === 'started anvil')!
      const sql = postgres(pg.url, { max: 1, onnotice: () => {} })
      try {
        const [kept] = await sql`SELECT success FROM worker_jobs WHERE id = ${firstJobId}`
        expect(kept?.success).toBe(true)
      } finally {
        await sql.end()
      }

      server.proc.kill('SIGKILL')
      await server.proc.exited
      await gone(pg.postgresPid, 'the embedded Postgres')
      await gone(chain.anvilPid, 'anvil')
    } finally {
      server.proc.kill('SIGKILL')
      squatter.kill('SIGKILL')
    }
  }, 90_000)
})

describe('production', () => {
  test.each([
    [{}, 'DATABASE_URL'],
    [{ DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/postgres' }, 'CHAIN_RPC_URL (or CHAINS)'],
  ])('without %p stops the boot with exit code 1 naming %s', async (env, name) => {
    const server = spawnServer({ NODE_ENV: 'production', ...(env as Record<string, string>) })
    expect(await server.proc.exited).toBe(1)
    expect((await server.stderr).trim()).toBe(`Missing environment variable ${name}: required when NODE_ENV=production`)
    expect(server.logs).toEqual([])
  })
})
