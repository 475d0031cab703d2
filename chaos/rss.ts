import { readFileSync } from 'node:fs'
import type { ChaosServer } from './servers'

/** Resident set size of a process in MiB, or null when it is gone. */
export function rssMib(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) / 1024 : null
  } catch {
    return null
  }
}

export interface RssSample {
  at: number
  role: 'main' | 'child'
  pid: number
  mib: number
}

/** Samples the RSS of every server's main process and children once a second until stopped. */
export function sampleRss(servers: () => readonly ChaosServer[], everyMs = 1000): { samples: RssSample[]; stop(): void } {
  const samples: RssSample[] = []
  const tick = () => {
    const at = Date.now()
    for (const s of servers()) {
      if (!s.alive) continue
      const main = rssMib(s.proc!.pid)
      if (main !== null) samples.push({ at, role: 'main', pid: s.proc!.pid, mib: main })
      for (const c of s.children()) {
        const mib = rssMib(c)
        if (mib !== null) samples.push({ at, role: 'child', pid: c, mib })
      }
    }
  }
  tick()
  const timer = setInterval(tick, everyMs)
  return { samples, stop: () => clearInterval(timer) }
}
