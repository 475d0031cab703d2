/**
 * How watchChain lives with a hosted RPC provider's limits: an eth_getLogs range the provider refuses is
 * halved and read again, and the size grows back once the provider has accepted a run of ranges; a rate
 * limit (HTTP 429) is waited out. Pure code, tested with plain numbers (tests/chain/providerLimits.test.ts).
 */

/** Successful ranges in a row after which the range size doubles again (up to CHAIN_MAX_BLOCK_RANGE). */
export const GROW_AFTER_SUCCESSES = 10

/** The current eth_getLogs range size of one chain: halved on a refusal, doubled after GROW_AFTER_SUCCESSES successes. */
export class RangeSizer {
  private current: number
  private streak = 0

  constructor(readonly max: number) {
    this.current = max
  }

  get size(): number {
    return this.current
  }

  /** The node refused a range of `width` blocks: the next ones are at most half as wide (at least 1). */
  refused(width: number): void {
    this.current = Math.max(1, Math.min(this.current, Math.floor(width / 2)))
    this.streak = 0
  }

  /** A range was read: after enough in a row, try twice the size again. */
  succeeded(): void {
    if (this.current >= this.max) return
    if (++this.streak >= GROW_AFTER_SUCCESSES) {
      this.current = Math.min(this.max, this.current * 2)
      this.streak = 0
    }
  }
}

/** The longest wait a Retry-After header may ask for; a provider asking for more gets this. */
export const MAX_RETRY_AFTER_MS = 60_000

/**
 * The wait before attempt `attempt + 1` (attempt ≥ 1 failures so far): the server's Retry-After when it
 * gave one (capped), otherwise exponential from `baseMs`, capped at `maxMs`.
 */
export function backoffMs(attempt: number, opts: { baseMs: number; maxMs: number; retryAfterMs?: number | null }): number {
  if (opts.retryAfterMs !== undefined && opts.retryAfterMs !== null && opts.retryAfterMs >= 0) return Math.min(opts.retryAfterMs, MAX_RETRY_AFTER_MS)
  return Math.min(opts.maxMs, opts.baseMs * 2 ** Math.max(0, attempt - 1))
}

/** Retry-After as milliseconds: delta-seconds or an HTTP date; null when absent or unreadable. */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | null {
  if (!value) return null
  const v = value.trim()
  if (/^\d+$/.test(v)) return Number(v) * 1000
  const at = Date.parse(v)
  return Number.isNaN(at) ? null : Math.max(0, at - now)
}

/** Waits `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason)
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    const onAbort = () => {
      clearTimeout(timer)
      reject(signal!.reason)
    }
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}
