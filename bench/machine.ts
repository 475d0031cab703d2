import { readFileSync } from 'node:fs'
import { availableParallelism, cpus, loadavg, totalmem } from 'node:os'
import { serverVersion } from './db'

export interface MachineInfo {
  cores: number
  cpuModel: string
  memoryGb: number
  postgres: string
  bun: string
  os: string
  /** 1-minute load average when the run began: other work on the machine disturbs the figures. */
  loadAvgAtStart: number
}

export async function machineInfo(): Promise<MachineInfo> {
  let os: string = process.platform
  try {
    os = /PRETTY_NAME="([^"]+)"/.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? os
  } catch {}
  return {
    cores: availableParallelism(),
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memoryGb: Math.round(totalmem() / 2 ** 30),
    postgres: await serverVersion(),
    bun: Bun.version,
    os,
    loadAvgAtStart: Math.round((loadavg()[0] ?? 0) * 100) / 100,
  }
}
