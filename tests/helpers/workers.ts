import type { WorkerHealth as SlotHealth } from '../../src/server/http/health'
import type { ServerProcess } from './server'
import { waitFor } from './wait'

/** A worker slot as /health shows it, plus the process behind it. */
export interface WorkerProcess extends SlotHealth {
  /** The worker id (worker_jobs.locked_by) of the slot's current process. */
  id: string
  pid: number
}

export interface WorkerHealth {
  code: number
  status: string
  workers: WorkerProcess[]
}

/**
 * /health of a server process, each worker with its id and pid. /health names neither (it is public),
 * so they come from the server's own log: the manager logs "worker spawned" with both for every process
 * it starts, and slot i's current process is its (restarts + 1)-th one. The line is written before the
 * restart shows in /health; waiting for it only covers the pipe.
 */
export async function workerHealth(server: ServerProcess): Promise<WorkerHealth> {
  const res = await fetch(`${server.url}/health`)
  const body = (await res.json()) as { status: string; workers: Omit<WorkerProcess, 'id' | 'pid'>[] }
  const workers = await Promise.all(
    body.workers.map(async (w) => {
      const spawn = await waitFor(() => spawnsOf(server, w.index)[w.restarts], {
        timeoutMs: 5000,
        what: `the "worker spawned" log line of slot ${w.index}, restart ${w.restarts}`,
      })
      return { ...w, id: spawn.workerId as string, pid: spawn.pid as number }
    }),
  )
  return { code: res.status, status: body.status, workers }
}

/** The workers of workerHealth. */
export async function workersOf(server: ServerProcess): Promise<WorkerProcess[]> {
  return (await workerHealth(server)).workers
}

/** Every "worker spawned" line of slot `index`, oldest first (the worker id is `<host>/<pid>/w<index>/<uuid>`). */
function spawnsOf(server: ServerProcess, index: number): Record<string, any>[] {
  return server.logs.filter((l) => l.msg === 'worker spawned' && typeof l.workerId === 'string' && l.workerId.split('/').at(-2) === `w${index}`)
}
