import type { Database } from '../db/client'
import type { WorkerJob } from '../db/schema'
import { findJob } from '../graphql/jobQueries'
import type { JobRegistry } from '../workers/jobs/types'
import { cancelJob, rerunJob } from '../workers/queue/cancel'
import { callerLabel, ownerOf, type SignedIn } from './callers'
import { AccessError } from './errors'
import type { SubmitPolicy } from './submitPolicy'

/**
 * Cancel and rerun on behalf of a caller: a user acts on their own jobs only (another's is reported as
 * absent, never as forbidden, so ids reveal nothing), admins on any. The engine does the work (queue/cancel.ts).
 */
export function createJobActions(deps: { db: Database; registry: JobRegistry; submitPolicy: SubmitPolicy }) {
  const userMaySubmit = (type: string) => deps.registry[type]?.access === 'user'
  return {
    /** A user cancels their own jobs of the types they may submit; an admin's job for them (an admin-only type) stays. */
    async cancel(caller: SignedIn, id: number) {
      const owner = ownerOf(caller)
      if (owner !== undefined) {
        const job = await findJob(deps.db, id, owner)
        if (job && !userMaySubmit(job.type)) throw new AccessError('FORBIDDEN', `job type ${JSON.stringify(job.type)} may only be cancelled by an admin`, 'id')
      }
      return cancelJob(deps.db, id, { ownerUserId: owner, by: callerLabel(caller) })
    },

    /** A rerun is a new job: the type's access rule, the rate limit and the pending cap apply as to a submit. */
    async rerun(caller: SignedIn, id: number): Promise<WorkerJob> {
      const owner = ownerOf(caller)
      if (owner !== undefined) {
        const job = await findJob(deps.db, id, owner)
        if (!job) throw new AccessError('NOT_FOUND', `no job ${id} of yours`, 'id')
        if (!userMaySubmit(job.type))
          throw new AccessError('FORBIDDEN', `job type ${JSON.stringify(job.type)} may only be submitted by an admin`, 'id')
        return deps.submitPolicy.admitOne(owner, (tx) => rerunJob(deps.db, deps.registry, id, { ownerUserId: owner, tx }))
      }
      return rerunJob(deps.db, deps.registry, id)
    },
  }
}
