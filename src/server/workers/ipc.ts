import type { Config } from '../config'
import type { JobMetricsDelta } from './jobMetrics'
import type { WorkerHealth } from './workerLoop'

/** Messages from the manager to a child. */
export type ToChild =
  /** `index`: the child's place among its server's children (0 answers a NOTIFY first, see WorkerLoop). */
  | { type: 'init'; workerId: string; index: number; config: Config; jobModules: string[] }
  /** Stop claiming, finish running jobs, exit 0. */
  | { type: 'drain' }
  /** The drain took too long: fire every handler's signal; the jobs go back to pending. */
  | { type: 'abort'; reason: string }

/** Messages from a child to the manager. */
export type ToManager =
  | { type: 'ready'; workerId: string }
  | { type: 'fatal'; error: string }
  /**
   * Sent every STATUS_INTERVAL_MS: a child that stops reporting, or reports a problem, is not healthy.
   * `metrics` carries what the child counted since its previous report (absent when nothing).
   */
  | { type: 'status'; workerId: string; health: WorkerHealth; metrics?: JobMetricsDelta }

export const STATUS_INTERVAL_MS = 1000
