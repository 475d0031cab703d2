import { rssMb as rssMib } from '../bench/proc'
import type { ChaosServer } from './servers'

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
