import { type Database, pipelinedTransaction } from '../../db/client'
import type { WorkerJob } from '../../db/schema'
import { decodeClaimed } from './claim'
import { type Outcome, plainFinish, type Written } from './finish'
import { firstLimitedClaim, type LimitedClaimOptions, limitedPrelude, limitedResult } from './limits'

export interface Handoff {
  /** The outcomes' rows that were written, each with what it became. */
  written: Written
  /** The type's jobs claimed into the freed slots (already running as far as the database knows). */
  jobs: WorkerJob[]
  /**
   * True when the claim is the final word on the freed slots: what it left, no worker could start now
   * (a keyed type's window can fall short of that; see claimLimited). Otherwise the slots are to be offered
   * again by a full claim.
   */
  settled: boolean
  /** A rate held jobs back: look again after this long (as claimLimited's retryInMs). */
  retryInMs: number | null
}

/**
 * The hand-off of concurrency slots: the outcomes of jobs of one limited type and the claim of that
 * type's next jobs into the slots they free, in one transaction.
 *
 * Written apart (the outcome, then a claim round), a limit-1 type's next job waited two round trips, a
 * wake of the worker's loop and the end of the round the loop had in flight; inside a no-op flood on a
 * saturated database that gap was about 15 ms for each job of the type. Here the outcome and the claim
 * leave together, and the slot never looks free to any other worker: nothing to announce.
 *
 * Order: the finish first, then the type's advisory lock, then the claim. The finish takes the lock of
 * the finished rows before waiting for the type's lock, so this transaction never waits on a row while
 * holding the lock that every claim of the type in the cluster needs. The claim's snapshot is taken after
 * the finish ran, in the same transaction, so it counts the finished rows out of the running ones; other
 * workers' claims, serialised by the lock, see the finish and the claim together, at commit.
 *
 * Priority: the claim takes only rows ahead of the worker's other claims' most urgent due row in
 * (priority, due, id) order (headBound, otherHeadsBound), the order a claim round gives slots in: a
 * limited type's backlog never takes a slot that more urgent work waits for, nor, at one priority, a slot
 * that older work waits for (the slot is sticky otherwise, and a limit-1 backlog would starve the worker's
 * other work of that priority). Such a slot is left to the loop, which gives it to that work, and
 * announced (not `settled`).
 *
 * Returns null when an outcome needs more than a finish (a retry, a cron successor, a rerun): the
 * caller writes those with finishJobs and leaves the slots to the loop's next claim.
 */
export async function finishAndClaimNext(
  db: Database,
  opts: LimitedClaimOptions & { outcomes: readonly Outcome[] },
): Promise<Handoff | null> {
  const finish = plainFinish(opts.workerId, opts.outcomes)
  if (!finish) return null
  const results = await pipelinedTransaction(db, [finish.statement, ...limitedPrelude(opts), firstLimitedClaim(opts)])
  const claimRows = results.at(-1)!
  const claimed = limitedResult(decodeClaimed(claimRows, opts), claimRows)
  // Settled: every freed slot refilled, or the claim saw all the type may start and it was none of it (no
  // more urgent work took precedence, no rate held it back, the window was not cut short).
  const settled =
    claimed.jobs.length >= opts.limit || (claimRows[0]?.exact !== false && !claimed.moreBeyondBound && claimed.retryInMs === null)
  return { written: finish.written(results[0]!), jobs: claimed.jobs, settled, retryInMs: claimed.retryInMs }
}
