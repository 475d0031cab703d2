/**
 * How long a failed job waits before its retry. Pure (the caller passes the random source), tested on
 * its own.
 * - No job is ever retried sooner than MIN_RETRY_DELAY_SECONDS after it failed, whatever it asked for:
 *   a retry loop at full speed (delay 0, no limit) once made ~1,000 rows a second.
 * - A positive autoRescheduleOnFailureDelay is a fixed delay, as the submitter asked.
 * - A delay of 0 (the default: "none given") backs off exponentially, 2^attempt seconds, with ±25%
 *   jitter so that jobs that failed together do not retry together, capped at MAX_BACKOFF_SECONDS.
 */
export const MIN_RETRY_DELAY_SECONDS = 1
export const MAX_BACKOFF_SECONDS = 3600

export function retryDelaySeconds(attempt: number, configuredDelaySeconds: number, random: () => number = Math.random): number {
  if (configuredDelaySeconds > 0) return Math.max(MIN_RETRY_DELAY_SECONDS, configuredDelaySeconds)
  const base = Math.min(MAX_BACKOFF_SECONDS, 2 ** Math.min(Math.max(1, attempt), 31))
  const jittered = base * (0.75 + 0.5 * random())
  return Math.max(MIN_RETRY_DELAY_SECONDS, Math.min(MAX_BACKOFF_SECONDS, jittered))
}
