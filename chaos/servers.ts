import { openSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Subprocess } from 'bun'
import { freePort } from '../src/server/dev/processes'

const ENTRY = new URL('./server.ts', import.meta.url).pathname

/** Every server of the suite shares these: sessions made by one are accepted by the others. */
export const ADMIN_TOKEN = 'chaos-admin-api-token-0123456789abcdef0123456789'
export const METRICS_TOKEN = 'chaos-metrics-token-0123456789abcdef'
const BASE_ENV = {
  NODE_ENV: 'production',
  HOST: '127.0.0.1',
  LOG_LEVEL: 'info',
  WORKER_LOG_LEVEL: 'info',
  WORKER_COUNT: '2',
  // No chain: the suite is about the engine. The RPC URL is set so no local anvil is started.
  CHAIN_RPC_URL: 'http://127.0.0.1:8545',
  CHAIN_ID: '31337',
  CRON_WATCH_CHAIN: 'off',
  DEPLOY_MULTICALL3_ON_BOOT: 'false',
  SESSION_SECRET: 'chaos-session-secret-0123456789abcdef0123456789',
  ADMIN_API_TOKEN: ADMIN_TOKEN,
  METRICS_TOKEN,
}

export interface ChildExit {
  server: string
  pid: number
  at: number
  code: number | null
  signal: string | null
}

/** One real server process (npm start's entry plus the recorder), its log in a file, its children read from /proc. */
export class ChaosServer {
  proc: Subprocess | null = null
  url = ''
  /** Every pid this server's main process has had. */
  readonly mains: number[] = []
  private port = 0

  constructor(
    readonly name: string,
    private readonly databaseUrl: string,
    private readonly logDir: string,
    private readonly extraEnv: Record<string, string> = {},
  ) {}

  /** Spawns the server; resolves once it is listening (not necessarily ready: see waitReady). */
  async start(env: Record<string, string> = {}): Promise<void> {
    this.port ||= await freePort()
    this.url = `http://127.0.0.1:${this.port}`
    const log = openSync(join(this.logDir, `${this.name}.log`), 'a')
    this.proc = Bun.spawn([process.execPath, ENTRY], {
      env: {
        ...process.env,
        ...BASE_ENV,
        PORT: String(this.port),
        BASE_URL: this.url,
        DATABASE_URL: this.databaseUrl,
        CHAOS_SERVER: this.name,
        ...this.extraEnv,
        ...env,
      },
      stdin: 'ignore',
      stdout: log,
      stderr: log,
    })
    this.mains.push(this.proc.pid)
  }

  get alive(): boolean {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null
  }

  /** The pids of the worker children of the current main process. */
  children(): number[] {
    if (!this.alive) return []
    const pid = this.proc!.pid
    try {
      return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
    } catch {
      return []
    }
  }

  /** The admin view of /health: 200 when the database answers and every worker slot is filled. */
  async health(): Promise<{ status: number; body: Record<string, any> | null }> {
    try {
      const res = await fetch(`${this.url}/health`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, signal: AbortSignal.timeout(3000) })
      return { status: res.status, body: (await res.json().catch(() => null)) as Record<string, any> | null }
    } catch {
      return { status: 0, body: null }
    }
  }

  /** Polls /health until 200 with `children` workers alive (deadline `timeoutMs`). */
  async waitReady(timeoutMs = 60_000, children = 2): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (Date.now() < deadline) {
      if (!this.alive) throw new Error(`server ${this.name} exited (${this.proc?.exitCode ?? this.proc?.signalCode}); see its log`)
      if ((await this.health()).status === 200 && this.children().length === children) return
      await Bun.sleep(100)
    }
    throw new Error(`server ${this.name} was not ready within ${timeoutMs} ms`)
  }

  /** SIGKILL the main process and its children at once: a host or container dying. Returns the pids killed. */
  kill(): number[] {
    if (!this.alive) return []
    const pids = [this.proc!.pid, ...this.children()]
    for (const p of pids) {
      try {
        process.kill(p, 'SIGKILL')
      } catch {}
    }
    return pids
  }

  async exited(): Promise<void> {
    await this.proc?.exited
  }

  /** Graceful stop (SIGTERM), SIGKILL after `graceMs`. Returns the exit code. */
  async stop(graceMs = 30_000): Promise<number | null> {
    if (!this.alive) return this.proc?.exitCode ?? null
    const proc = this.proc!
    proc.kill('SIGTERM')
    const timer = setTimeout(() => this.kill(), graceMs)
    await proc.exited
    clearTimeout(timer)
    return proc.exitCode
  }

  /** Every worker child that exited, as its manager logged it (a main killed whole logs nothing more). */
  childExits(): ChildExit[] {
    const pidOf = new Map<string, number>()
    const out: ChildExit[] = []
    for (const l of this.logs()) {
      if (l.msg === 'worker spawned') pidOf.set(l.workerId, l.pid)
      else if (l.msg === 'worker exited') out.push({ server: this.name, pid: pidOf.get(l.workerId) ?? -1, at: l.time, code: l.code ?? null, signal: l.signal ?? null })
    }
    return out
  }

  /** The server's log so far, one parsed JSON object per line (raw text for the rest). */
  logs(): Record<string, any>[] {
    const text = readFileSync(join(this.logDir, `${this.name}.log`), 'utf8')
    return text
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        try {
          return JSON.parse(line) as Record<string, any>
        } catch {
          return { raw: line }
        }
      })
  }
}
