/** The suite's two sizes: `--quick` for CI (about 3 minutes), and the full run that writes docs/RELIABILITY.md. */
export interface ChaosConfig {
  quick: boolean
  /** Scenario 1: recorder jobs submitted, at this rate. */
  jobs: number
  jobsPerSecond: number
  /** Every this many ms a random child is SIGKILLed during scenario 1. */
  childKillEveryMs: number
  /** Scenario 2: how long the partition lasts (longer than the lease). */
  partitionMs: number
  /** Scenario 3: how long the three servers run the per-second cron. */
  instancesMs: number
  /** The lease every server runs with (the default, 10 s). */
  leaseMs: number
}

export function loadChaosConfig(argv: readonly string[]): ChaosConfig {
  const quick = argv.includes('--quick')
  const leaseMs = 10_000
  return quick
    ? { quick, jobs: 10_000, jobsPerSecond: 400, childKillEveryMs: 2000, partitionMs: leaseMs + 3000, instancesMs: 30_000, leaseMs }
    : { quick, jobs: 100_000, jobsPerSecond: 400, childKillEveryMs: 2000, partitionMs: leaseMs * 2, instancesMs: 300_000, leaseMs }
}
