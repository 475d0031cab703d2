import type { BenchConfig } from './config'
import { sleep } from './db'
import { type ProbeData, openProbeReceiver } from './probe'
import { progressLine } from './progress'
import { type LatencySummary, nowMs, percentile, round, summarize } from './stats'

export interface LatencyResult extends LatencySummary {
  /** Samples whose handler never reported within the timeout. */
  lost: number
  /** How long the submit call itself took (its median and p99), to tell submit cost from pickup cost. */
  submitCallP50: number
  submitCallP99: number
  /** From the submit call's return to the handler's start: the pickup itself, without the insert's commit. */
  beyondSubmit: { p50: number; p99: number }
}

/**
 * Sequential pickup latency on an idle queue: take the clock, submit one probe job, wait until its
 * handler reports that it started, pause briefly so the queue is idle again, repeat.
 * A few unmeasured warm-up samples come first (connections, JIT).
 */
export async function measureLatency(
  label: string,
  cfg: BenchConfig,
  submit: (data: ProbeData) => Promise<void>,
  timeoutMs = 5000,
): Promise<LatencyResult> {
  const receiver = await openProbeReceiver()
  const line = progressLine()
  const samples: number[] = []
  const submitCalls: number[] = []
  const beyond: number[] = []
  let lost = 0
  const warmup = 10
  try {
    for (let seq = 0; seq < cfg.latencySamples + warmup; seq++) {
      const t = nowMs()
      await submit({ seq, t, port: receiver.port })
      const submitted = nowMs()
      const r = await receiver.next(seq, timeoutMs)
      if (seq >= warmup) {
        submitCalls.push(submitted - t)
        if (r) {
          samples.push(r.startedAt - r.t)
          beyond.push(r.startedAt - submitted)
        } else lost++
      }
      if (seq % 20 === 0) line.update(`${label}: ${Math.max(0, seq - warmup)}/${cfg.latencySamples} samples`)
      await sleep(cfg.latencyGapMs)
    }
  } finally {
    receiver.close()
  }
  const s = summarize(samples)
  const submitCallP50 = round(percentile(submitCalls, 50), 3)
  const submitCallP99 = round(percentile(submitCalls, 99), 3)
  const beyondSubmit = { p50: round(percentile(beyond, 50), 3), p99: round(percentile(beyond, 99), 3) }
  line.done(
    `${label}: p50 ${s.p50} ms, p95 ${s.p95} ms, p99 ${s.p99} ms${lost ? `, ${lost} lost` : ''} (the submit call itself: p50 ${submitCallP50} ms, p99 ${submitCallP99} ms; after it returned: p50 ${beyondSubmit.p50} ms, p99 ${beyondSubmit.p99} ms)`,
  )
  return { ...s, lost, submitCallP50, submitCallP99, beyondSubmit }
}
