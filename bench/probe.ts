import { createSocket, type Socket } from 'node:dgram'
import { nowMs } from './stats'

/**
 * Pickup-latency probe. The bench puts its clock reading (taken just before it submits) in the job data;
 * the handler, first thing, reads its own clock and sends both back over UDP to the bench. Both processes
 * run on this machine, so `performance.timeOrigin + performance.now()` is one clock with sub-ms resolution.
 */
export interface ProbeData {
  seq: number
  t: number
  port: number
}

export interface ProbeReport {
  seq: number
  t: number
  startedAt: number
}

let sender: Socket | null = null

/** Called by a probe handler as its first statement. */
export function reportProbeStart(data: ProbeData): void {
  const startedAt = nowMs()
  sender ??= createSocket('udp4')
  sender.unref()
  const msg: ProbeReport = { seq: data.seq, t: data.t, startedAt }
  sender.send(JSON.stringify(msg), data.port, '127.0.0.1')
}

export interface ProbeReceiver {
  port: number
  /** Waits for the report of sample `seq`; null after `timeoutMs`. */
  next(seq: number, timeoutMs: number): Promise<ProbeReport | null>
  close(): void
}

export async function openProbeReceiver(): Promise<ProbeReceiver> {
  const sock = createSocket('udp4')
  const waiting = new Map<number, (r: ProbeReport) => void>()
  const early = new Map<number, ProbeReport>()
  sock.on('message', (buf) => {
    const r = JSON.parse(buf.toString()) as ProbeReport
    const w = waiting.get(r.seq)
    if (w) {
      waiting.delete(r.seq)
      w(r)
    } else early.set(r.seq, r)
  })
  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', () => resolve()))
  return {
    port: sock.address().port,
    next(seq, timeoutMs) {
      const got = early.get(seq)
      if (got) {
        early.delete(seq)
        return Promise.resolve(got)
      }
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          waiting.delete(seq)
          resolve(null)
        }, timeoutMs)
        waiting.set(seq, (r) => {
          clearTimeout(timer)
          resolve(r)
        })
      })
    },
    close: () => sock.close(),
  }
}
