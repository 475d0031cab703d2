import type { QueueDb } from '../../src/server/workers/queueDb'

/**
 * Wraps `queue.run` for a test: `before(call)` runs ahead of each statement (it may throw, as a lost
 * connection would, or hold it back), `after(result)` once its reply has come (it may hold the reply back,
 * as a slow network would). `call` counts from 1.
 */
export function interceptRun(
  queue: QueueDb,
  hooks: { before?: (call: number) => void | Promise<void>; after?: (result: unknown) => void | Promise<void> },
): void {
  const run = queue.run.bind(queue)
  let calls = 0
  queue.run = (async (fn: Parameters<QueueDb['run']>[0]) => {
    await hooks.before?.(++calls)
    const result = await run(fn)
    await hooks.after?.(result)
    return result
  }) as QueueDb['run']
}
