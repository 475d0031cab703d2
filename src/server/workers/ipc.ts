import type { Config } from '../config'

/** Messages from the manager to a child. */
export type ToChild =
  | { type: 'init'; workerId: string; config: Config; jobModules: string[] }
  /** Stop claiming, finish running jobs, exit 0. */
  | { type: 'drain' }

/** Messages from a child to the manager. */
export type ToManager = { type: 'ready'; workerId: string } | { type: 'fatal'; error: string }
