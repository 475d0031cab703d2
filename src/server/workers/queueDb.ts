import { createDb, type Database, type DbHandle, type DbOptions } from '../db/client'

/** The code of the error a queue statement gets when it had no answer in time (counted as transient). */
export const QUERY_TIMEOUT = 'QUERY_TIMEOUT'

/**
 * Which connections a statement uses. The claim loop runs one statement at a time, so it gets one
 * connection of its own: a claim never queues behind an outcome write or a lease renewal, and its backend
 * stays warm (with one shared pool, claims rotated over every connection, each one cold: a slower median
 * pickup). Outcome writes, renewals and the rest share the others.
 */
export type QueueLane = 'claim' | 'write'

/**
 * A child's pool for the queue's own statements (claim, outcome writes, lease renewals), with an answer
 * deadline enforced here, not by the server. A statement_timeout only helps while the server can be
 * reached; on a connection that went silent (a partition, a dead peer) postgres.js waits for as long as
 * TCP does, which would freeze the claim loop, the outcome writer and the renewals for many minutes.
 * When a statement misses its deadline its lane's pool is replaced by a fresh one, so the next statement
 * opens a new connection instead of queueing behind the silent one.
 */
export class QueueDb {
  private readonly handles: Record<QueueLane, DbHandle>
  private readonly laneOpts: Record<QueueLane, DbOptions>

  /** `opts.max` (at least 2) is the total: one connection claims, the rest write. */
  constructor(
    private readonly url: string,
    opts: DbOptions,
    private readonly deadlineMs: number,
  ) {
    const total = Math.max(2, opts.max ?? 3)
    // No array-type query on connect: the queue passes arrays as JSON and reads none. And postgres.js runs
    // that query with nobody awaiting it, so a connection destroyed during it (a pool replaced past the
    // deadline, right after it opened a connection into a black hole) was an unhandled rejection that
    // killed the child (found by the black-hole test, 1 run in 6).
    const lane = { ...opts, fetchTypes: false }
    this.laneOpts = { claim: { ...lane, max: 1 }, write: { ...lane, max: total - 1 } }
    this.handles = { claim: createDb(url, this.laneOpts.claim), write: createDb(url, this.laneOpts.write) }
  }

  /** Runs `fn` on the lane's pool; rejects with code QUERY_TIMEOUT past the deadline. */
  async run<T>(fn: (db: Database) => Promise<T>, lane: QueueLane = 'write'): Promise<T> {
    const handle = this.handles[lane]
    let timer: ReturnType<typeof setTimeout> | undefined
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(Object.assign(new Error(`queue statement had no answer within ${this.deadlineMs} ms`), { code: QUERY_TIMEOUT }))
      }, this.deadlineMs)
    })
    try {
      return await Promise.race([fn(handle.db), deadline])
    } catch (err) {
      if ((err as { code?: string }).code === QUERY_TIMEOUT && this.handles[lane] === handle) {
        this.handles[lane] = createDb(this.url, this.laneOpts[lane])
        void handle.client.end({ timeout: 0 }).catch(() => {})
      }
      throw err
    } finally {
      clearTimeout(timer)
    }
  }

  async close(): Promise<void> {
    await Promise.all([this.handles.claim.close(), this.handles.write.close()])
  }
}
