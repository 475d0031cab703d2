import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { createDb, type DbHandle } from '../src/server/db/client'
import { createSubmitter, type JobSubmitter } from '../src/server/serverApp'
import { buildRegistry } from '../src/server/workers/jobs/registry'
import { EventLog, type FaultEvent } from './events'
import type { ChaosPostgres } from './postgres'
import { jobs as recorderJobs } from './recorder'
import { ChaosServer } from './servers'

export const say = (msg: string) => console.log(`[chaos ${new Date().toISOString().slice(11, 19)}] ${msg}`)

/** What every scenario works with: the suite's Postgres, its servers, a submitter, and the fault log. */
export class ScenarioContext {
  readonly events = new EventLog()
  readonly servers: ChaosServer[] = []
  readonly db: DbHandle
  readonly submitter: JobSubmitter
  /** Child kills that came back: kill time → the time the server had all its children again. */
  readonly comebacks: { pid: number; server: string; at: number; backAt: number | null }[] = []

  constructor(
    readonly pg: ChaosPostgres,
    readonly logDir: string,
    readonly leaseMs: number,
  ) {
    mkdirSync(logDir, { recursive: true })
    this.db = createDb(pg.url, { max: 2, applicationName: 'chaos-driver' })
    this.submitter = createSubmitter(this.db.db, buildRegistry(recorderJobs))
  }

  get sql() {
    return this.pg.sql
  }

  /** Starts a server (on the suite's Postgres unless `databaseUrl` says otherwise) and waits until it is ready. */
  async startServer(name: string, opts: { env?: Record<string, string>; databaseUrl?: string; wait?: boolean } = {}): Promise<ChaosServer> {
    let s = this.servers.find((x) => x.name === name)
    if (!s) {
      s = new ChaosServer(name, opts.databaseUrl ?? this.pg.url, this.logDir, { WORKER_LEASE_MS: String(this.leaseMs), ...opts.env })
      this.servers.push(s)
    }
    await s.start()
    if (opts.wait !== false) await s.waitReady()
    return s
  }

  /** SIGKILL one random worker child of a random live server; the manager must start another. */
  killRandomChild(): FaultEvent | null {
    const live = this.servers.filter((s) => s.alive && s.children().length > 0)
    const server = live[Math.floor(Math.random() * live.length)]
    if (!server) return null
    const children = server.children()
    const pid = children[Math.floor(Math.random() * children.length)]!
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      return null
    }
    const at = Date.now()
    const record = { pid, server: server.name, at, backAt: null as number | null }
    this.comebacks.push(record)
    void this.untilBack(server, pid, 30_000).then((t) => {
      record.backAt = t
    })
    return this.events.add({ kind: 'child-kill', at, end: at, server: server.name, pids: [pid] })
  }

  /** When `server` has its two children again without `pid`; null if not within the deadline (or it was killed). */
  private async untilBack(server: ChaosServer, pid: number, timeoutMs: number): Promise<number | null> {
    const deadline = Date.now() + timeoutMs
    while (Date.now() < deadline) {
      const c = server.children()
      if (c.length === 2 && !c.includes(pid)) return Date.now()
      await Bun.sleep(50)
    }
    return null
  }

  /** SIGKILL a whole server, main process and children. */
  killServer(server: ChaosServer): FaultEvent {
    const pids = server.kill()
    const at = Date.now()
    return this.events.add({ kind: 'server-kill', at, end: at, server: server.name, pids })
  }

  async restartPostgres(mode: 'fast' | 'immediate'): Promise<FaultEvent> {
    const at = Date.now()
    await this.pg.stop(mode)
    await this.pg.start()
    return this.events.add({ kind: mode === 'fast' ? 'pg-restart-fast' : 'pg-restart-immediate', at, end: Date.now() })
  }

  async terminateBackends(): Promise<FaultEvent & { count: number }> {
    const at = Date.now()
    const count = await this.pg.terminateBackends()
    return { ...this.events.add({ kind: 'terminate-backends', at, end: Date.now() }), count }
  }

  /** Stops every server gracefully (SIGKILL after 30 s) and the submitter's pool. */
  async close(): Promise<void> {
    await Promise.all(this.servers.map((s) => s.stop()))
    await this.db.close()
  }
}

export const logDirFor = (root: string, scenario: string) => join(root, scenario)
