import { describe, expect, test } from 'bun:test'
import type { WorkerJob } from '../../src/server/db/schema'
import { nextCronRun } from '../../src/server/workers/cron'
import { mayHaveSuccessor, planFinish, successorOf } from '../../src/server/workers/queue/successor'

const NOW = new Date('2026-03-10T10:15:30.000Z')

const job = (over: Partial<WorkerJob> = {}): WorkerJob => ({
  id: 42,
  type: 'noop',
  userId: 7,
  data: { a: 1 },
  priority: 0,
  concurrencyKey: null,
  due: NOW,
  started: NOW,
  finished: null,
  cancelledAt: null,
  removeAt: null,
  success: null,
  result: null,
  cronSchedule: null,
  autoRescheduleOnFailure: false,
  autoRescheduleOnFailureDelay: 0,
  removeDelay: 3600,
  persistent: false,
  tag: null,
  attempt: 1,
  maxAttempts: 25,
  rescheduledFromJob: null,
  lockedBy: 'w',
  lastError: null,
  leaseExpiresAt: null,
  createdAt: NOW,
  updatedAt: NOW,
  ...over,
})

describe('nextCronRun (UTC, fixed clock)', () => {
  test('5-field: daily at 02:00', () => {
    expect(nextCronRun('0 2 * * *', NOW).toISOString()).toBe('2026-03-11T02:00:00.000Z')
  })
  test('6-field: every 30 seconds', () => {
    expect(nextCronRun('*/30 * * * * *', NOW).toISOString()).toBe('2026-03-10T10:16:00.000Z')
    expect(nextCronRun('*/30 * * * * *', new Date('2026-03-10T10:15:29.999Z')).toISOString()).toBe('2026-03-10T10:15:30.000Z')
  })
  test('strictly after: a run exactly now is not repeated', () => {
    expect(nextCronRun('* * * * *', new Date('2026-03-10T10:15:00.000Z')).toISOString()).toBe('2026-03-10T10:16:00.000Z')
  })
})

describe('successorOf', () => {
  test('a successful one-off job has no successor', () => {
    expect(successorOf(job(), true, NOW)).toBeNull()
    expect(mayHaveSuccessor(job(), true)).toBe(false)
  })

  test('a failed one-off job without retries has no successor', () => {
    expect(successorOf(job(), false, NOW)).toBeNull()
  })

  test('a failed job with retries: now + delay, attempt + 1, every option carried', () => {
    const j = job({ autoRescheduleOnFailure: true, autoRescheduleOnFailureDelay: 90, persistent: true, tag: 't', maxAttempts: 3, attempt: 2 })
    const s = successorOf(j, false, NOW)!
    expect(s.due.toISOString()).toBe('2026-03-10T10:17:00.000Z')
    expect(s.attempt).toBe(3)
    expect(s.persistent).toBe(true)
    expect(s.tag).toBe('t')
    expect(s.maxAttempts).toBe(3)
    expect(s.removeDelay).toBe(3600)
    expect(s.userId).toBe(7)
    expect(s.data).toEqual({ a: 1 })
    expect(s.rescheduledFromJob).toBe(42)
  })

  test('maxAttempts stops the retries', () => {
    expect(successorOf(job({ autoRescheduleOnFailure: true, maxAttempts: 3, attempt: 3 }), false, NOW)).toBeNull()
  })

  test('a cron job recurs at its next time after success and after failure', () => {
    const c = job({ cronSchedule: '0 * * * *', attempt: 1 })
    expect(successorOf(c, true, NOW)!.due.toISOString()).toBe('2026-03-10T11:00:00.000Z')
    expect(successorOf(c, false, NOW)!.due.toISOString()).toBe('2026-03-10T11:00:00.000Z')
    expect(successorOf(c, false, NOW)!.cronSchedule).toBe('0 * * * *')
  })

  test('a failed cron job with retries retries first, then falls back to its schedule', () => {
    const c = job({ cronSchedule: '0 * * * *', autoRescheduleOnFailure: true, autoRescheduleOnFailureDelay: 10, maxAttempts: 2 })
    const retry = successorOf(c, false, NOW)!
    expect(retry.due.toISOString()).toBe('2026-03-10T10:15:40.000Z')
    expect(retry.attempt).toBe(2)
    const afterLast = successorOf({ ...c, attempt: 2 }, false, NOW)!
    expect(afterLast.due.toISOString()).toBe('2026-03-10T11:00:00.000Z')
    expect(afterLast.attempt).toBe(1)
  })
})

describe('planFinish', () => {
  test('a cron string with no next run (a hand-written row) fails the job with a clear error and no successor', () => {
    for (const cronSchedule of ['0 0 30 2 *', 'garbage']) {
      const plan = planFinish(job({ cronSchedule }), true, { ok: 1 }, NOW)
      expect(plan.success).toBe(false)
      expect(plan.successor).toBeNull()
      expect((plan.result as { error: string }).error).toContain('cron_schedule: cron expression')
    }
  })

  test("keeps the job's own error beside the cron error", () => {
    const plan = planFinish(job({ cronSchedule: 'garbage' }), false, { error: 'boom' }, NOW)
    expect(plan.result).toMatchObject({ jobError: 'boom' })
  })

  test('a valid plan is the outcome as given plus its successor', () => {
    const plan = planFinish(job({ cronSchedule: '0 * * * *' }), true, { ok: 1 }, NOW)
    expect(plan).toMatchObject({ success: true, result: { ok: 1 } })
    expect(plan.successor!.due.toISOString()).toBe('2026-03-10T11:00:00.000Z')
  })
})
