import { existsSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import type { Subprocess } from 'bun'

/**
 * Process and port helpers for the development services (embedded Postgres, local anvil). They run as
 * detached children, so a Ctrl-C in the terminal reaches only the server, which stops them after it has
 * drained its jobs; a watchdog stops them if the server dies without doing so.
 */

export function isPortFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer()
    srv.once('error', () => resolve(false))
    srv.listen(port, host, () => srv.close(() => resolve(true)))
  })
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number }
      srv.close(() => resolve(port))
    })
  })
}

/** `preferred` when nothing listens there, so the URL stays the same from one start to the next; else any free port. */
export async function pickPort(preferred: number): Promise<number> {
  return (await isPortFree(preferred)) ? preferred : freePort()
}

export interface Watchdog {
  /** Call before stopping the service yourself, so the watchdog never signals a pid that was reused since. */
  disarm(): void
}

/**
 * Sends `signal` to `pid` once this process is gone, however it died (even SIGKILL): a detached `sh` waits
 * for EOF on a pipe whose only writer is this process, and the kernel closes that pipe when we die.
 * It ignores terminal signals so that only our death (or disarm) ends it.
 */
export function watchdog(pid: number, signal: 'INT' | 'TERM'): Watchdog {
  const proc = Bun.spawn(['sh', '-c', `trap '' INT TERM HUP; read _; kill -s ${signal} ${pid} 2>/dev/null`], {
    stdin: 'pipe',
    stdout: 'ignore',
    stderr: 'ignore',
    detached: true,
  })
  proc.unref()
  return {
    disarm() {
      if (running(proc)) proc.kill('SIGKILL')
    },
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    // EPERM: it exists but belongs to another user (a postmaster runs as the postgres user).
    return (err as { code?: string }).code === 'EPERM'
  }
}

/** The parent pid and command line of a live process, or null. Linux reads /proc; elsewhere `ps`. */
export function processInfo(pid: number): { ppid: number; args: string } | null {
  if (!isAlive(pid)) return null
  if (existsSync('/proc/self/stat')) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      // "pid (comm) state ppid …": comm may contain spaces, so parse after its closing parenthesis.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim()
      return { ppid, args }
    } catch {
      return null
    }
  }
  const out = Bun.spawnSync(['ps', '-o', 'ppid=,args=', '-p', String(pid)]).stdout.toString().trim()
  const m = /^(\d+)\s+(.*)$/.exec(out)
  return m ? { ppid: Number(m[1]), args: m[2]! } : null
}

/** Polls until `pid` is gone; false if it is still alive at the deadline. */
export async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (isAlive(pid)) {
    if (Date.now() > deadline) return false
    await new Promise((r) => setTimeout(r, 25))
  }
  return true
}

/** True until the child has exited, by itself or by a signal. */
export const running = (proc: Subprocess) => proc.exitCode === null && proc.signalCode === null

/**
 * Drains a child's stream (so the child never blocks on a full pipe), passing each line to `onLine`, and
 * keeps its last `max` characters: the error message when the child fails to start.
 */
export function tail(stream: ReadableStream<Uint8Array>, max = 4000, onLine?: (line: string) => void): { text(): Promise<string> } {
  let text = ''
  const drained = (async () => {
    const decoder = new TextDecoder()
    const reader = stream.getReader()
    let partial = ''
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      const s = decoder.decode(value, { stream: true })
      text = (text + s).slice(-max)
      if (!onLine) continue
      const lines = (partial + s).split('\n')
      partial = lines.pop() ?? ''
      for (const l of lines) if (l.trim()) onLine(l)
    }
  })().catch(() => {})
  return {
    // Once the child is gone its last words arrive at once; a second at most, in case a grandchild holds the pipe.
    async text() {
      let timer: Timer | undefined
      await Promise.race([drained, new Promise((r) => (timer = setTimeout(r, 1000)))])
      clearTimeout(timer)
      return text.trim()
    },
  }
}

/** Signals a child of ours and waits for it to exit; SIGKILL if it is still there after `graceMs`. */
export async function stopChild(proc: Subprocess, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (!running(proc)) return
  proc.kill(signal)
  let timer: Timer | undefined
  const timedOut = new Promise<true>((r) => {
    timer = setTimeout(() => r(true), graceMs)
  })
  const late = await Promise.race([proc.exited.then(() => false), timedOut])
  clearTimeout(timer)
  if (late) {
    proc.kill('SIGKILL')
    await proc.exited
  }
}
