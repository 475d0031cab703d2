import { describe, expect, test } from 'bun:test'
import { cronProblem, isValidCron } from '../../src/server/workers/cron'
import { MAX_BACKOFF_SECONDS, MIN_RETRY_DELAY_SECONDS, retryDelaySeconds } from '../../src/server/workers/queue/backoff'
import { sanitizeForJsonb } from '../../src/server/workers/queue/rows'
import { MAX_RESULT_CHARS, storableJson } from '../../src/server/workers/queue/storable'
import { isTransientDbError } from '../../src/server/workers/queue/transient'

describe('retryDelaySeconds (pure)', () => {
  const mid = () => 0.5
  test('no delay given: 2^attempt seconds, jittered ±25%, capped', () => {
    expect([1, 2, 3, 10].map((a) => retryDelaySeconds(a, 0, mid))).toEqual([2, 4, 8, 1024])
    expect(retryDelaySeconds(1, 0, () => 0)).toBe(1.5)
    expect(retryDelaySeconds(1, 0, () => 0.999999)).toBeCloseTo(2.5, 4)
    expect(retryDelaySeconds(12, 0, mid)).toBe(MAX_BACKOFF_SECONDS)
    expect(retryDelaySeconds(1000, 0, () => 0.999)).toBe(MAX_BACKOFF_SECONDS)
  })
  test('never under a second, whatever the attempt or the random source', () => {
    for (const attempt of [0, 1, -5]) for (const r of [0, 0.5, 1]) expect(retryDelaySeconds(attempt, 0, () => r)).toBeGreaterThanOrEqual(MIN_RETRY_DELAY_SECONDS)
  })
  test('a configured delay is used as it is, without jitter', () => {
    expect(retryDelaySeconds(7, 90, () => 0)).toBe(90)
    expect(retryDelaySeconds(1, 1, () => 0.9)).toBe(1)
  })
})

describe('cron validity', () => {
  test('a cron string is valid only when it has a next run', () => {
    expect(isValidCron('*/30 * * * * *')).toBe(true)
    expect(isValidCron('0 0 30 2 *')).toBe(false)
    expect(cronProblem('0 0 30 2 *')).toContain('no future run')
    expect(cronProblem('garbage')).toContain('fields')
    expect(cronProblem(`${'1,'.repeat(200)}1 * * * *`)).toContain('too long')
  })
})

describe('storable results', () => {
  test('NUL and lone surrogates become U+FFFD in values and keys; pairs stay', () => {
    expect(sanitizeForJsonb({ 'a\u0000': ['x\ud800', '\udc00y', '\ud83d\ude00'] })).toEqual({ 'a\ufffd': ['x\ufffd', '\ufffdy', '\ud83d\ude00'] })
  })
  test('as JSON.stringify sees it: toJSON, dropped undefined and functions, null in arrays, bigints as text, cycles cut', () => {
    const o: Record<string, unknown> = { d: new Date(0), u: undefined, f: () => 1, arr: [undefined, 1n], n: Number.NaN }
    o.me = o
    expect(sanitizeForJsonb(o)).toEqual({ d: '1970-01-01T00:00:00.000Z', arr: [null, '1'], n: null, me: '[circular]' })
    const shared = { x: 1 }
    expect(sanitizeForJsonb({ a: shared, b: shared })).toEqual({ a: { x: 1 }, b: { x: 1 } })
  })
  test('storableJson: the fast path leaves clean JSON alone; a literal backslash-u text is not mistaken for a NUL', () => {
    expect(storableJson({ a: 1 })).toBe('{"a":1}')
    expect(storableJson(undefined)).toBe('null')
    expect(JSON.parse(storableJson({ s: '\\u0000' })).s).toBe('\\u0000')
    expect(JSON.parse(storableJson({ s: 'a\u0000' })).s).toBe('a\ufffd')
  })
  test('a result over the cap becomes a preview that is itself storable', () => {
    // The JSON text starts with {"s":" (6 characters), so the pair straddles the 2,000-character cut.
    const out = JSON.parse(storableJson({ s: `${'x'.repeat(1993)}\ud83d\ude00${'y'.repeat(MAX_RESULT_CHARS)}` }))
    expect(out.truncated).toBe(true)
    expect(out.preview.length).toBe(2000)
    expect(out.preview.endsWith('\ufffd')).toBe(true)
  })
})

describe('isTransientDbError', () => {
  test('connection and server-state errors are transient; data errors are not', () => {
    for (const code of ['ECONNRESET', 'CONNECTION_CLOSED', '08006', '57P01', '57014', '40P01', '53300']) expect(isTransientDbError({ code })).toBe(true)
    for (const code of ['22P05', '23505', '54000', '42601', undefined]) expect(isTransientDbError({ code })).toBe(false)
    expect(isTransientDbError(new TypeError('x'))).toBe(false)
  })
})

describe('storableJson never throws', () => {
  test('a toJSON that throws becomes a note instead of a lost outcome', () => {
    const bad = { toJSON: () => { throw new Error('nope') } }
    expect(JSON.parse(storableJson(bad))).toEqual({ unserializable: 'nope' })
  })
})
