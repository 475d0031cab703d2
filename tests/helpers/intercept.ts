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

/** A gate: `hold()` waits until `open()` is called. */
export function gate(): { hold: () => Promise<void>; open: () => void } {
  let open!: () => void
  const opened = new Promise<void>((r) => {
    open = r
  })
  return { hold: () => opened, open }
}

/**
 * Holds back the reply of the first statement whose result `matches`, until `open()`: `held()` says
 * whether it has arrived and is being held.
 */
export function holdFirstReply(queue: QueueDb, matches: (result: unknown) => boolean): { held: () => boolean; open: () => void } {
  const g = gate()
  let held = false
  interceptRun(queue, {
    after: async (r) => {
      if (!held && matches(r)) {
        held = true
        await g.hold()
      }
    },
  })
  return { held: () => held, open: g.open }
}
