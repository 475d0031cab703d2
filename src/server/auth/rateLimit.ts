/**
 * A token bucket per key (a user id): `perMinute` tokens, refilled continuously. In memory, so each
 * server instance enforces it on its own; the pending-jobs cap (submitPolicy.ts) is the cluster-wide one.
 */
export function createRateLimiter(opts: { perMinute: number; now?: () => number; maxKeys?: number }) {
  const now = opts.now ?? Date.now
  const capacity = opts.perMinute
  const perMs = opts.perMinute / 60_000
  // A bucket that has refilled completely carries no information: such keys are dropped when the map is
  // full, so an attacker with many accounts cannot grow it without bound.
  const maxKeys = opts.maxKeys ?? 100_000
  const buckets = new Map<number, { tokens: number; at: number }>()

  function level(key: number, t: number): number {
    const b = buckets.get(key)
    if (!b) return capacity
    return Math.min(capacity, b.tokens + (t - b.at) * perMs)
  }

  function prune(t: number): void {
    for (const [key] of buckets) if (level(key, t) >= capacity) buckets.delete(key)
  }

  return {
    /** Takes `n` tokens, or returns how many seconds until `n` are there (n > capacity never fits). */
    take(key: number, n: number): { ok: true } | { ok: false; retryAfterSeconds: number | null } {
      const t = now()
      const tokens = level(key, t)
      if (n > capacity) return { ok: false, retryAfterSeconds: null }
      if (tokens < n) return { ok: false, retryAfterSeconds: Math.ceil((n - tokens) / perMs / 1000) }
      if (!buckets.has(key) && buckets.size >= maxKeys) prune(t)
      buckets.set(key, { tokens: tokens - n, at: t })
      return { ok: true }
    },
    get size() {
      return buckets.size
    },
  }
}
