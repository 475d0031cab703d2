/** Sizes of one benchmark run. `--quick` keeps the harness working in CI; the full run is the real measurement. */
export interface BenchConfig {
  quick: boolean
  /** Jobs per throughput run. */
  jobs: number
  /** Runs per throughput scenario that drains (not the capped slow defaults); the fastest counts. */
  throughputRuns: number
  /** Sequential pickup-latency samples per system. */
  latencySamples: number
  /** Finished rows already in worker_jobs for the scale scenario. */
  preFinishedRows: number
  /** Jobs submitted through submitJobs in the bulk-submit scenario, and the chunk per call. */
  bulkJobs: number
  bulkChunk: number
  /** Idle window for the database-load measurement. */
  idleWindowMs: number
  /**
   * Wait before the idle window. Longer than Postgres' PGSTAT_IDLE_INTERVAL (10 s): a backend whose stats
   * flush met lock contention while busy retries only after that long, and would count its busy-period
   * transactions inside the idle window (seen: 15 transactions/s measured against a true 0.8/s).
   */
  idleSettleMs: number
  /** A throughput run that has not drained by then stops and reports the rate it reached. */
  throughputCapMs: number
  /** A peer's default configuration that is known to poll slowly gets a shorter cap. */
  slowDefaultCapMs: number
  /** How often a throughput run checks (cheaply) whether every job is finished. */
  pollMs: number
  /** Pause after each latency sample, so every sample starts on an idle queue. */
  latencyGapMs: number
  /** Exactly-once sends per wallet in the sender scenario (against anvil). */
  sendsPerWallet: number
}

export function loadBenchConfig(argv: readonly string[]): BenchConfig {
  const quick = argv.includes('--quick')
  return quick
    ? {
        quick,
        jobs: 2_000,
        throughputRuns: 1,
        latencySamples: 100,
        preFinishedRows: 20_000,
        bulkJobs: 20_000,
        bulkChunk: 10_000,
        idleWindowMs: 3_000,
        idleSettleMs: 11_000,
        throughputCapMs: 20_000,
        slowDefaultCapMs: 3_000,
        pollMs: 50,
        latencyGapMs: 5,
        sendsPerWallet: 30,
      }
    : {
        quick,
        jobs: 100_000,
        throughputRuns: 2,
        latencySamples: 1_000,
        preFinishedRows: 1_000_000,
        bulkJobs: 100_000,
        bulkChunk: 10_000,
        idleWindowMs: 10_000,
        idleSettleMs: 12_000,
        throughputCapMs: 60_000,
        slowDefaultCapMs: 10_000,
        pollMs: 50,
        latencyGapMs: 5,
        sendsPerWallet: 300,
      }
}
