import { afterAll, describe, expect, test } from 'bun:test'
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { isAlive, waitForExit } from '../../src/server/dev/processes'
import { waitFor } from '../helpers/wait'

/**
 * `npm test` on a machine with no Postgres on 127.0.0.1:5432: the preload (tests/setup/database.ts) starts
 * an embedded one. A child `bun test` with TEST_EMBEDDED_POSTGRES=true (the same path, forced, since this
 * machine may well have a Postgres there) runs a real test file, tests/fixtures/embeddedPostgresProbe.ts,
 * which reports the server it used. Its own data directory, so it never meets the parent's.
 */

const ROOT = resolve(import.meta.dir, '../..')
// As root, Postgres runs as the postgres user, which must be able to enter the data directory's parent.
const tmp = mkdtempSync(join(tmpdir(), 'embedded-test-pg-'))
chmodSync(tmp, 0o755)
const pgDir = join(tmp, 'pg')
const started: number[] = []
afterAll(async () => {
  // Only if an assertion failed with a postmaster still up: never leave one behind.
  for (const pid of started) if (isAlive(pid)) process.kill(pid, 'SIGKILL')
  for (const pid of started) await waitForExit(pid, 5000)
  rmSync(tmp, { recursive: true, force: true })
})

const USING = /^tests: (.+); using an embedded Postgres on 127\.0\.0\.1:(\d+) \(pid (\d+), data in (.+)\)$/m

interface Probe {
  port: number
  dataDirectory: string
  postmaster: number
  database: string
}

/**
 * As root with util-linux's unshare and iproute2's ip: a child in a network namespace of its own, where
 * nothing listens on 127.0.0.1:5432 whatever runs on this machine, to test the detection itself.
 */
const ISOLATE = ['unshare', '-n', 'sh', '-c', 'ip link set lo up && exec "$@"', 'sh']
const canIsolate = process.getuid?.() === 0 && Bun.spawnSync([...ISOLATE, 'true'], { stdout: 'ignore', stderr: 'ignore' }).exitCode === 0

function runProbe(env: Record<string, string | undefined> = {}, prefix: string[] = []) {
  const childEnv: Record<string, string | undefined> = { ...process.env, TEST_EMBEDDED_POSTGRES: 'true', TEST_EMBEDDED_POSTGRES_DIR: pgDir, ...env }
  delete childEnv.TEST_DATABASE_ADMIN_URL
  const proc = Bun.spawn([...prefix, process.execPath, 'test', '--timeout', '60000', './tests/fixtures/embeddedPostgresProbe.ts'], {
    cwd: ROOT,
    env: childEnv,
    stdin: 'pipe',
    stdout: 'pipe',
    stderr: 'pipe',
  })
  let output = ''
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder()
    const reader = stream.getReader()
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      output += decoder.decode(value, { stream: true })
    }
  }
  const drained = Promise.all([drain(proc.stdout), drain(proc.stderr)])
  return {
    proc,
    output: () => output,
    /** The exit code once the child and both its streams are done. */
    exited: async () => {
      const code = await proc.exited
      await drained
      return code
    },
    using(): { reason: string; port: number; pid: number; dataDir: string } | null {
      const m = USING.exec(output)
      return m ? { reason: m[1]!, port: Number(m[2]), pid: Number(m[3]), dataDir: m[4]! } : null
    },
    probe(): Probe | null {
      const m = /^probe: (.*)$/m.exec(output)
      return m ? (JSON.parse(m[1]!) as Probe) : null
    },
  }
}

describe('npm test without a Postgres on 127.0.0.1:5432', () => {
  test('runs a test file on an embedded Postgres of its own, and stops it at the end', async () => {
    const run = runProbe()
    try {
      const code = await run.exited()
      const out = run.output()
      expect(code, out).toBe(0)
      expect(out).toContain('tests: creating the embedded Postgres data directory')
      const using = run.using()
      expect(using, out).not.toBeNull()
      started.push(using!.pid)
      expect(using!.reason).toBe('TEST_EMBEDDED_POSTGRES=true')
      expect(using!.dataDir).toBe(pgDir)
      expect(out).toMatch(/^ 1 pass$/m)
      expect(out).toMatch(/^ 0 fail$/m)
      // The test file's database was on the embedded server, not on the system one.
      const probe = run.probe()
      expect(probe, out).not.toBeNull()
      expect(probe!.port).not.toBe(5432)
      expect(probe!.port).toBe(using!.port)
      expect(probe!.dataDirectory).toBe(pgDir)
      expect(probe!.postmaster).toBe(using!.pid)
      // Stopped before the test process exited: the postmaster is gone and shut down cleanly (no lock file).
      expect(isAlive(using!.pid)).toBe(false)
      expect(existsSync(join(pgDir, 'postmaster.pid'))).toBe(false)
    } finally {
      run.proc.kill('SIGKILL')
    }
  }, 60_000)

  test('reuses its data directory, and a killed test run leaves no postmaster behind', async () => {
    const run = runProbe({ PROBE_HOLD: 'true' })
    try {
      // PROBE_HOLD: the probe test waits on stdin (never closed) once it has printed its line.
      const probe = await Promise.race([
        waitFor(() => run.probe(), { timeoutMs: 45_000, intervalMs: 20, what: 'the probe line' }),
        run.proc.exited.then((code): never => {
          throw new Error(`bun test exited with ${code} before the probe ran: ${run.output()}`)
        }),
      ])
      const out = run.output()
      expect(out).not.toContain('creating the embedded Postgres data directory')
      expect(run.using()?.pid).toBe(probe.postmaster)
      started.push(probe.postmaster)
      expect(isAlive(probe.postmaster)).toBe(true)
      run.proc.kill('SIGKILL')
      expect(await run.exited()).not.toBe(0)
      // No afterAll ran: the watchdog stops the postmaster once the test process is gone.
      expect(await waitForExit(probe.postmaster, 20_000)).toBe(true)
    } finally {
      run.proc.kill('SIGKILL')
    }
  }, 60_000)

  test.skipIf(!canIsolate)('detects that no Postgres answers on 127.0.0.1:5432 (needs root, unshare and ip)', async () => {
    const run = runProbe({ TEST_EMBEDDED_POSTGRES: undefined }, ISOLATE)
    try {
      const code = await run.exited()
      const out = run.output()
      expect(code, out).toBe(0)
      const using = run.using()
      expect(using, out).not.toBeNull()
      started.push(using!.pid)
      expect(using!.reason).toBe('no Postgres on 127.0.0.1:5432 (ECONNREFUSED)')
      expect(run.probe()?.port).toBe(using!.port)
      expect(isAlive(using!.pid)).toBe(false)
    } finally {
      run.proc.kill('SIGKILL')
    }
  }, 60_000)
})
