/**
 * What a subscription does when its consumer falls behind (its queue is bounded: memory is an attack surface).
 * - `latest`: the queue holds one item; a new one replaces the unconsumed one. For streams of whole-state
 *   snapshots (a job row), where the newest item supersedes the older ones, so nothing is lost by dropping.
 * - `error`: the queue holds up to `capacity` items; one more ends the stream with `error()`, thrown after the
 *   items already queued. For streams of events (notifications), where dropping one would lose it silently.
 */
export type OverflowPolicy = { kind: 'latest' } | { kind: 'error'; capacity: number; error: () => Error }

type Waiter<T> = { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void }

/**
 * A bounded push-to-pull async iterator: the hub pushes, the subscriber iterates (`for await`). `release`
 * is called exactly once when the stream ends, whoever ends it (the hub, the consumer's `return()`, or
 * `cancel()` on abort), so the hub drops its bookkeeping in one place.
 */
export class LiveStream<T> implements AsyncIterableIterator<T> {
  /** Resolves when the subscription is live (or has ended): what is committed afterwards is delivered. */
  readonly ready: Promise<void>
  private markReadyFn!: () => void
  private readonly buf: T[] = []
  private readonly waiters: Waiter<T>[] = []
  private ended = false
  private failure: Error | null = null
  private released = false

  constructor(
    private readonly policy: OverflowPolicy,
    private readonly release: () => void,
  ) {
    this.ready = new Promise<void>((resolve) => {
      this.markReadyFn = resolve
    })
  }

  get isEnded(): boolean {
    return this.ended
  }

  /** Items queued and not yet taken by the consumer. */
  get queued(): number {
    return this.buf.length
  }

  markReady(): void {
    this.markReadyFn()
  }

  /** Queues `value` (or hands it to a waiting consumer). false when it overflowed and the stream ended. */
  push(value: T): boolean {
    if (this.ended) return false
    const waiter = this.waiters.shift()
    if (waiter) {
      waiter.resolve({ value, done: false })
      return true
    }
    if (this.policy.kind === 'latest') {
      this.buf.length = 0
      this.buf.push(value)
      return true
    }
    if (this.buf.length >= this.policy.capacity) {
      this.end(this.policy.error())
      return false
    }
    this.buf.push(value)
    return true
  }

  /**
   * No more items: the consumer still gets those queued, then the end (or `error`, thrown once). Releases the
   * hub's bookkeeping at once.
   */
  end(error?: Error): void {
    if (this.ended) return
    this.ended = true
    this.failure = error ?? null
    this.markReadyFn()
    while (this.waiters.length > 0) {
      const w = this.waiters.shift()!
      if (this.failure) {
        w.reject(this.failure)
        this.failure = null
      } else w.resolve({ value: undefined, done: true })
    }
    if (!this.released) {
      this.released = true
      this.release()
    }
  }

  /** The consumer is gone (aborted, returned): drops what is queued and ends. */
  cancel(): void {
    this.buf.length = 0
    this.failure = null
    this.end()
  }

  next(): Promise<IteratorResult<T>> {
    if (this.buf.length > 0) return Promise.resolve({ value: this.buf.shift()!, done: false })
    if (this.ended) {
      const failure = this.failure
      if (failure) {
        this.failure = null
        return Promise.reject(failure)
      }
      return Promise.resolve({ value: undefined, done: true })
    }
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }))
  }

  return(): Promise<IteratorResult<T>> {
    this.cancel()
    return Promise.resolve({ value: undefined, done: true })
  }

  throw(): Promise<IteratorResult<T>> {
    return this.return()
  }

  [Symbol.asyncIterator](): this {
    return this
  }
}
