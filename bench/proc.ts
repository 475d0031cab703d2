import { appendFileSync, readFileSync } from 'node:fs'
import type { Subprocess } from 'bun'
import { sleep } from './db'

/** Resident set size of a process in MB (VmRSS), or null when it is gone. */
export function rssMb(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) / 1024 : null
  } catch {
    return null
  }
}

/** Total CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat. */
export function cpuSeconds(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) / 100
  } catch {
    return null
  }
}

export interface Spawned {
  proc: Subprocess
  /** Resolves with the first IPC message satisfying `isReady`. */
  ready: Promise<Record<string, any>>
  /** Every IPC message received after ready goes here. */
  onMessage: ((msg: Record<string, any>) => void) | null
  stop(): Promise<void>
}

/**
 * Spawns a Bun process with an IPC channel. Its stdout goes to /dev/null (each system logs at its default
 * level, and its children inherit that), stderr is kept for error messages. The process reports readiness
 * (and anything else) with process.send.
 */
export function spawnProcess(
  argv: string[],
  env: Record<string, string>,
  isReady: (msg: Record<string, any>) => boolean,
  timeoutMs = 30_000,
): Spawned {
  let found = false
  let resolveReady: (m: Record<string, any>) => void = () => {}
  const spawned: Spawned = {
    proc: null as unknown as Subprocess,
    ready: new Promise((r) => {
      resolveReady = r
    }),
    onMessage: null,
    async stop() {
      const { proc } = spawned
      if (proc.exitCode !== null || proc.signalCode !== null) return
      proc.kill('SIGTERM')
      let timer: ReturnType<typeof setTimeout> | undefined
      const exited = await Promise.race([
        proc.exited.then(() => true),
        new Promise<boolean>((r) => {
          timer = setTimeout(() => r(false), 20_000)
        }),
      ])
      clearTimeout(timer)
      if (!exited) {
        proc.kill('SIGKILL')
        await proc.exited
      }
    },
  }
  const proc = Bun.spawn(argv, {
    env: { ...process.env, ...env },
    stdin: 'ignore',
    stdout: 'ignore',
    stderr: 'pipe',
    serialization: 'json',
    ipc(msg: Record<string, any>) {
      if (!found && isReady(msg)) {
        found = true
        resolveReady(msg)
      } else if (found) spawned.onMessage?.(msg)
    },
  })
  spawned.proc = proc
  const stderrTail: string[] = []
  // BENCH_STDERR_FILE keeps the whole stderr (a diagnostic: e.g. the children's GC log, BUN_JSC_logGC=1).
  // Appended, so the processes of one run (several may live at once) never overwrite each other.
  const keepPath = process.env.BENCH_STDERR_FILE
  void (async () => {
    const dec = new TextDecoder()
    for await (const c of proc.stderr as unknown as AsyncIterable<Uint8Array>) {
      if (keepPath) appendFileSync(keepPath, c)
      stderrTail.push(dec.decode(c, { stream: true }))
      if (stderrTail.length > 100) stderrTail.shift()
    }
  })()
  const failed = new Promise<never>((_, reject) => {
    const timer = setTimeout(() => reject(new Error(`${argv.join(' ')} not ready in ${timeoutMs} ms: ${stderrTail.join('')}`)), timeoutMs)
    void spawned.ready.then(() => clearTimeout(timer))
    void proc.exited.then(async (code) => {
      clearTimeout(timer)
      await sleep(50)
      if (!found) reject(new Error(`${argv.join(' ')} exited with ${code} before it was ready: ${stderrTail.join('')}`))
    })
  })
  failed.catch(() => {})
  spawned.ready = Promise.race([spawned.ready, failed])
  return spawned
}
