import { createDb, type Database, type DbHandle, type DbOptions } from '../db/client'

/** The code of the error a queue statement gets when it had no answer in time (counted as transient). */
export const QUERY_TIMEOUT = 'QUERY_TIMEOUT'

/**
 * A child's pool for the queue's own statements (claim, outcome writes, lease renewals), with an answer
 * deadline enforced here, not by the server. A statement_timeout only helps while the server can be
 * reached; on a connection that went silent (a partition, a dead peer) postgres.js waits for as long as
 * TCP does, which would freeze the claim loop, the outcome writer and the renewals for many minutes.
 * When a statement misses its deadline the pool is replaced by a fresh one, so the next statement opens
 * a new connection instead of queueing behind the silent one.
 */
export class QueueDb {
  private handle: DbHandle
  private readonly opts: DbOptions

  constructor(
    private readonly url: string,
    opts: DbOptions,
    private readonly deadlineMs: number,
  ) {
    // No array-type query on connect: the queue passes arrays as JSON and reads none. And postgres.js runs
    // that query with nobody awaiting it, so a connection destroyed during it (the pool replaced past the
    // deadline right after it opened a connection into a black hole) was an unhandled rejection that killed
    // the child (found by the black-hole test).
    this.opts = { ...opts, fetchTypes: false }
    this.handle = createDb(url, this.opts)
  }

  /** Runs `fn` on the pool; rejects with code QUERY_TIMEOUT past the deadline. */
  async run<T>(fn: (db: Database) => Promise<T>): Promise<T> {
    const handle = this.handle
    let timer: ReturnType<typeof setTimeout> | undefined
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(Object.assign(new Error(`queue statement had no answer within ${this.deadlineMs} ms`), { code: QUERY_TIMEOUT }))
      }, this.deadlineMs)
    })
    try {
      return await Promise.race([fn(handle.db), deadline])
    } catch (err) {
      if ((err as { code?: string }).code === QUERY_TIMEOUT && this.handle === handle) {
        this.handle = createDb(this.url, this.opts)
        void handle.client.end({ timeout: 0 }).catch(() => {})
      }
      throw err
    } finally {
      clearTimeout(timer)
    }
  }

  close(): Promise<void> {
    return this.handle.close()
  }
}
