import { readdirSync, readFileSync } from 'node:fs'
import { cpuSeconds } from './proc'
import { round } from './stats'

/** Where the CPU went during a run: the system under test, Postgres, and everything else on the machine. */
export interface CpuUse {
  /** CPU seconds of the pids under test (our server and its children, or the peer's worker process). */
  systemSeconds: number
  /** CPU seconds of all postgres processes (backends, walwriter, autovacuum...). */
  postgresSeconds: number
  /**
   * CPU seconds of everything else: kernel time charged to no process (softirq, I/O and fsync workers, which
   * a system committing once per job causes itself), the bench process, and any other work on the machine.
   */
  otherSeconds: number
  /** Share of the machine's CPU capacity in use during the window. */
  machineBusyPct: number
}

interface Snapshot {
  busy: number
  total: number
  pids: number
  /** CPU seconds per postgres pid: backends come and go, so deltas are taken per process. */
  postgres: Map<number, number>
}

const HZ = 100

function machineJiffies(): { busy: number; total: number } {
  // user nice system idle iowait irq softirq steal (guest time is already inside user, so it is left out).
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1, 9).map(Number)
  const total = f.reduce((a, b) => a + b, 0)
  const idle = (f[3] ?? 0) + (f[4] ?? 0)
  return { busy: total - idle, total }
}

function postgresSeconds(): Map<number, number> {
  const out = new Map<number, number>()
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue
    try {
      if (readFileSync(`/proc/${d}/comm`, 'utf8').trim() !== 'postgres') continue
      out.set(Number(d), cpuSeconds(Number(d)) ?? 0)
    } catch {}
  }
  return out
}

export function cpuSnapshot(pids: readonly number[]): Snapshot {
  const m = machineJiffies()
  return { ...m, pids: pids.reduce((a, p) => a + (cpuSeconds(p) ?? 0), 0), postgres: postgresSeconds() }
}

export function cpuSince(before: Snapshot, pids: readonly number[]): CpuUse {
  const after = cpuSnapshot(pids)
  const busy = (after.busy - before.busy) / HZ
  const systemSeconds = after.pids - before.pids
  // A backend that exited during the window is missed; one that started counts from zero.
  let postgres = 0
  for (const [pid, secs] of after.postgres) postgres += Math.max(0, secs - (before.postgres.get(pid) ?? 0))
  return {
    systemSeconds: round(systemSeconds, 2),
    postgresSeconds: round(postgres, 2),
    otherSeconds: round(Math.max(0, busy - systemSeconds - postgres), 2),
    machineBusyPct: round((100 * (after.busy - before.busy)) / Math.max(1, after.total - before.total), 1),
  }
}
