import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { SignJWT } from 'jose'
import postgres from 'postgres'
import type { LocalAccount } from 'viem'
import { createSiweMessage, parseSiweMessage } from 'viem/siwe'
import { AUTHENTICATE, GENERATE, newWallet, signIn } from '../helpers/auth'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type ServerProcess, startServerProcess, TEST_ENV } from '../helpers/server'
import { waitFor } from '../helpers/wait'

/**
 * Hostile and malformed input, as a table: each case is one real HTTP request to one real server process,
 * as a signed-in user (a real SIWE sign-in), the admin API token or nobody, and says exactly what must come
 * back: the error code and the field it names, or that the input was stored verbatim. Afterwards the server
 * must be as it was: no stray rows, no connection left in a transaction, /health 200, no error logged, and
 * the main process's RSS within 50 MB of where it started.
 *
 * Field names: a resolver's refusal names the field in `extensions.field` (`due` for submitJob,
 * `jobs[3].data.ms` for submitJobs). A refusal by GraphQL itself (a variable of the wrong type) names the
 * path in its message (`at "input.removeDelay"`), and a literal of the wrong type is located by the error's
 * `locations`: the table checks whichever applies.
 */

const SUBMIT_BATCH_MAX = 20
const ADMIN_SUBMIT_BATCH_MAX = 10_000
const HTTP_MAX_BODY_BYTES = 1 << 20
const RSS_SLACK_BYTES = 50 * 1024 * 1024
/** Far enough that no stored job ever runs while the test looks at it. */
const FAR = '2999-01-01T00:00:00Z'

// ---------------------------------------------------------------------------------------------------------
// The table's shape

type Who = 'user' | 'admin' | 'anon'

interface Ctx {
  url: string
  user: { token: string; userId: number }
  wallet: LocalAccount
}

type Vars = Record<string, unknown>

/** A refusal: the first error's code, and what it names. */
interface Refusal {
  code: string
  /** `extensions.field`, exactly. */
  field?: string
  /** A substring of the message (GraphQL's own errors name the variable path there). */
  named?: string
  /** What the first error's location must point at in the query (single-line queries): it starts there. */
  at?: string
  /** `extensions.limit` of a document-limit refusal. */
  limit?: string
  /** The HTTP status, where it is part of the contract (413, 415, 400 of a limit). */
  status?: number
}

type Expectation =
  | Refusal
  /** Accepted, and the row holds exactly `data` (compared as jsonb) and `tag`. */
  | { stored: { data: unknown; tag?: string | null } }
  /** Either stored verbatim (a plain key, as sent) or refused with this code and field: both are fine. */
  | { storedOrRefused: { data: unknown; refusal: Refusal } }
  /** Accepted, with exactly this `data`. */
  | { returns: unknown }

interface Case {
  category: string
  name: string
  as: Who
  query?: string
  variables?: Vars | ((ctx: Ctx) => Vars | Promise<Vars>)
  /** A request that is not a plain GraphQL POST; a header set to null is not sent. */
  http?: {
    method?: 'GET' | 'POST'
    path?: string
    headers?: Record<string, string | null>
    body?: () => BodyInit
    authorization?: string | ((ctx: Ctx) => string | Promise<string>)
  }
  expect: Expectation
}

const cases: Case[] = []
const add = (category: string, list: Omit<Case, 'category'>[]) => {
  for (const c of list) cases.push({ category, ...c })
}

const SUBMIT = `mutation ($input: SubmitJobInput!) { submitJob(input: $input) { id } }`
const BATCH = `mutation ($jobs: [SubmitJobInput!]!) { submitJobs(jobs: $jobs) { id } }`
const JOB = `query ($id: ID!) { job(id: $id) { id } }`
const JOBS = `query ($filter: JobFilter, $limit: Int, $offset: Int, $order: JobOrder) { jobs(filter: $filter, limit: $limit, offset: $offset, order: $order) { total } }`
const NOTIFICATIONS = `query ($limit: Int, $offset: Int) { myNotifications(limit: $limit, offset: $offset) { id } }`
const CANCEL = `mutation ($id: ID!) { cancelJob(id: $id) { status } }`
const RERUN = `mutation ($id: ID!) { rerunJob(id: $id) { id } }`
const MARK = `mutation ($id: ID!) { markNotificationRead(id: $id) { id } }`
const WORKER_STATUS = `{ workerStatus { servers { id } } }`

const bad = (field: string): Refusal => ({ code: 'BAD_USER_INPUT', field })
const forbidden = (field?: string): Refusal => (field ? { code: 'FORBIDDEN', field } : { code: 'FORBIDDEN' })
/** GraphQL refusing a variable's value before any resolver runs: a 400 whose message names the path. */
const coercion = (named: string): Refusal => ({ code: 'BAD_USER_INPUT', named, status: 400 })
/** graphql-js refusing the document (a literal of the wrong type, an unknown field), located at `at`. */
const invalid = (at: string): Refusal => ({ code: 'GRAPHQL_VALIDATION_FAILED', at })
const limited = (limit: string): Refusal => ({ code: 'GRAPHQL_VALIDATION_FAILED', limit, status: 400 })
const unauthenticated: Refusal = { code: 'UNAUTHENTICATED' }
const show = (v: unknown) => {
  const s = typeof v === 'string' ? JSON.stringify(v) : JSON.stringify(v) ?? String(v)
  return s.length > 60 ? `${s.slice(0, 57)}…(${s.length})` : s
}
/** How findUnstorable names a key that is itself unstorable: `data["a\u0000"]`. */
const keyStep = (key: string) => `[${JSON.stringify(key)}]`

/** A batch of five valid jobs with `bad` at index `at`. */
const batchWith = (at: number, badJob: Vars): Vars[] =>
  Array.from({ length: 5 }, (_, i) => (i === at ? badJob : { type: 'noop', due: FAR }))

// ---------------------------------------------------------------------------------------------------------
// Submit inputs that GraphQL accepts and validation must refuse, each naming one field. Every one is sent
// as submitJob (user and admin: the field as is) and as item k of a submitJobs batch (user: `jobs[k].…`).

interface BadSubmit {
  input: Vars
  field: string
  /** A user is refused for a reason of access instead (FORBIDDEN), before validation. */
  userForbidden?: boolean
  /** Only meaningful for a user (an admin may do it). */
  userOnly?: boolean
}

const tooBig = 'x'.repeat(300 * 1024)
const BAD_SUBMITS: BadSubmit[] = [
  // Unknown job types, including names every plain object inherits.
  ...['', 'nope', 'NOOP', ' noop', 'noop ', 'noop\u0000', '\ud800', 'x'.repeat(10_000), "noop'; DROP TABLE worker_jobs; --"].map((type) => ({
    input: { type },
    field: 'type',
  })),
  ...['toString', '__proto__', 'constructor', 'hasOwnProperty', 'valueOf'].map((type) => ({ input: { type }, field: 'type' })),
  // Admin-only types: a user may not submit them.
  ...['hang', 'onceOnly', 'poisonResult', 'hog', 'untimed', 'deployMulticall3', 'watchChain', 'removeOldWorkerJobs'].map((type) => ({
    input: { type, due: FAR },
    field: 'type',
    userForbidden: true,
    userOnly: true,
  })),
  // userId: a user's jobs are their own; a negative one is invalid for anyone.
  { input: { type: 'noop', userId: -1 }, field: 'userId', userForbidden: true },
  { input: { type: 'noop', userId: 0, due: FAR }, field: 'userId', userForbidden: true, userOnly: true },
  // Cron expressions.
  ...[
    'garbage',
    '0 0 30 2 *',
    '0 0 31 4 *',
    '* * * * * * *',
    '* * * *',
    '',
    '   ',
    '60 * * * *',
    '* 24 * * *',
    '*/0 * * * *',
    '@reboot',
    "'; DROP TABLE worker_jobs; --",
    '* * * * *\u0000',
    '* * * * *\ud800',
    '*'.repeat(300),
  ].map((cronSchedule) => ({ input: { type: 'noop', cronSchedule }, field: 'cronSchedule' })),
  // A user's cron job may not run more than once a minute (an admin's may).
  ...['* * * * * *', '*/59 * * * * *', '*/10 * * * * *'].map((cronSchedule) => ({
    input: { type: 'noop', cronSchedule, due: FAR },
    field: 'cronSchedule',
    userForbidden: true,
    userOnly: true,
  })),
  // Negative and out-of-range numbers that are still GraphQL Ints.
  { input: { type: 'noop', removeDelay: -1 }, field: 'removeDelay' },
  { input: { type: 'noop', removeDelay: -(2 ** 31) }, field: 'removeDelay' },
  { input: { type: 'noop', autoRescheduleOnFailureDelay: -1 }, field: 'autoRescheduleOnFailureDelay' },
  { input: { type: 'noop', maxAttempts: 0 }, field: 'maxAttempts' },
  { input: { type: 'noop', maxAttempts: -5 }, field: 'maxAttempts' },
  // Impossible dates, dates out of range, dates without a zone.
  ...[
    '2030-02-31T00:00:00Z',
    '2030-02-29',
    '2031-04-31T12:00:00Z',
    '2030-13-01T00:00:00Z',
    '2030-00-10T00:00:00Z',
    '0000-01-01T00:00:00Z',
    '1969-12-31T23:59:59Z',
    '10000-01-01T00:00:00Z',
    '+010000-01-01T00:00:00Z',
    '9999-12-31T23:59:59.999-01:00',
    '2030-01-01T00:00:00',
    '2030-01-01T24:00:00Z',
    '2030-01-01T23:60:00Z',
    '2030-01-01T23:59:60Z',
    '2030-01-01T00:00:00+24:00',
    '2030-01-01T00:00:00+05:60',
    '2030-01-01 00:00:00Z',
    '2030-01-01T00:00:00.1234567891Z',
    '',
    'now',
    '1e12',
    '2030-01-01T00:00:00Z\u0000',
    '2030-01-01T00:00:00Z\ud800',
  ].map((due) => ({ input: { type: 'noop', due }, field: 'due' })),
  // Tags.
  ...['', 'x'.repeat(201), 'x'.repeat(100_000), 'system:watchChain', 'system:', 'a\u0000b', '\u0000', 'a\ud800', '\udfffz'].map((tag) => ({
    input: { type: 'noop', tag },
    field: 'tag',
  })),
  // Job data against the type's schema.
  ...([-1, 1e300, 2 ** 53, 1.5, 'x', null, true, [], {}] as unknown[]).map((ms) => ({ input: { type: 'sleep', data: { ms } }, field: 'data.ms' })),
  { input: { type: 'sleep', data: {} }, field: 'data.ms' },
  { input: { type: 'sleep' }, field: 'data.ms' },
  { input: { type: 'watchful', data: { ms: -1 } }, field: 'data.ms' },
  { input: { type: 'fail', data: { message: 5 } }, field: 'data.message' },
  { input: { type: 'fail', data: { message: {} } }, field: 'data.message' },
  { input: { type: 'record', data: { holdMs: -1 } }, field: 'data.holdMs' },
  { input: { type: 'record', data: { fail: 'yes' } }, field: 'data.fail' },
  ...(['x', [1], 5, true] as unknown[]).map((data) => ({ input: { type: 'noop', data }, field: 'data' })),
  // Strings and keys jsonb cannot store, anywhere in the data.
  { input: { type: 'noop', data: { s: 'a\u0000b' } }, field: 'data.s' },
  { input: { type: 'noop', data: { s: 'a\ud800b' } }, field: 'data.s' },
  { input: { type: 'noop', data: { a: ['x', '\udc00'] } }, field: 'data.a[1]' },
  { input: { type: 'noop', data: { deep: { er: [{ x: '\u0000' }] } } }, field: 'data.deep.er[0].x' },
  { input: { type: 'noop', data: { 'a\u0000': 1 } }, field: `data${keyStep('a\u0000')}` },
  { input: { type: 'noop', data: { a: { '\udfff': 1 } } }, field: `data.a${keyStep('\udfff')}` },
  { input: { type: 'fail', data: { message: 'boom\u0000' } }, field: 'data.message' },
  // Oversized data: over 256 KiB of JSON in one job (a long string, a long array, many keys). A user's
  // limit: admins are not limited (see "stored verbatim").
  { input: { type: 'noop', data: { s: tooBig } }, field: 'data', userOnly: true },
  { input: { type: 'noop', data: { a: Array.from({ length: 140_000 }, () => 1) } }, field: 'data', userOnly: true },
  { input: { type: 'noop', data: Object.fromEntries(Array.from({ length: 40_000 }, (_, i) => [`k${i}`, i])) }, field: 'data', userOnly: true },
]

const submitCategory = (b: BadSubmit) =>
  b.field === 'type'
    ? b.userForbidden
      ? 'admin-only type'
      : 'unknown type'
    : b.field === 'userId'
      ? 'ownership'
      : b.field === 'cronSchedule'
        ? 'cron'
        : b.field === 'due'
          ? 'dates'
          : b.field.startsWith('data') && /\\u0000|\\ud[89a-f]/i.test(JSON.stringify(b.input))
            ? 'NUL and surrogates'
            : b.field === 'data' && JSON.stringify(b.input).length > 256 * 1024
              ? 'oversized'
              : b.field === 'tag'
                ? 'tags'
                : 'numbers and data'

BAD_SUBMITS.forEach((b, n) => {
  const category = submitCategory(b)
  const label = `${show(b.input)} → ${b.field}`
  const k = (n % 4) + 1
  const userRefusal = b.userForbidden ? forbidden(b.field) : bad(b.field)
  cases.push({ category, name: `submitJob as user: ${label}`, as: 'user', query: SUBMIT, variables: { input: b.input }, expect: userRefusal })
  cases.push({
    category,
    name: `submitJobs as user, item ${k}: ${label}`,
    as: 'user',
    query: BATCH,
    variables: { jobs: batchWith(k, b.input) },
    expect: { ...userRefusal, field: `jobs[${k}].${b.field}` },
  })
  if (!b.userOnly) cases.push({ category, name: `submitJob as admin: ${label}`, as: 'admin', query: SUBMIT, variables: { input: b.input }, expect: bad(b.field) })
})

add('ownership', [
  {
    name: 'submitJob as user for another userId',
    as: 'user',
    query: SUBMIT,
    variables: (ctx) => ({ input: { type: 'noop', userId: ctx.user.userId + 1, due: FAR } }),
    expect: forbidden('userId'),
  },
  {
    name: 'submitJobs as user, item 3 for another userId',
    as: 'user',
    query: BATCH,
    variables: (ctx) => ({ jobs: batchWith(3, { type: 'noop', userId: ctx.user.userId + 1, due: FAR }) }),
    expect: forbidden('jobs[3].userId'),
  },
  {
    name: 'submitJob as user for userId 2^31-1',
    as: 'user',
    query: SUBMIT,
    variables: { input: { type: 'noop', userId: 2 ** 31 - 1, due: FAR } },
    expect: forbidden('userId'),
  },
  { name: "jobs filtered by another user's id", as: 'user', query: JOBS, variables: (ctx) => ({ filter: { userId: ctx.user.userId + 1 } }), expect: forbidden('filter.userId') },
  { name: 'jobs filtered by userId 0 (the system user)', as: 'user', query: JOBS, variables: { filter: { userId: 0 } }, expect: forbidden('filter.userId') },
  { name: 'workerStatus as user', as: 'user', query: WORKER_STATUS, expect: forbidden() },
  { name: 'myNotifications as the API token (no user of its own)', as: 'admin', query: NOTIFICATIONS, expect: forbidden() },
  { name: 'markNotificationRead as the API token', as: 'admin', query: MARK, variables: { id: '1' }, expect: forbidden() },
  { name: 'markAllNotificationsRead as the API token', as: 'admin', query: `mutation { markAllNotificationsRead }`, expect: forbidden() },
])

// ---------------------------------------------------------------------------------------------------------
// Wrong GraphQL types in variables: GraphQL refuses them before any resolver, naming the path.

const GQL_BAD: [field: string, values: unknown[]][] = [
  ['type', [5, true, { a: 1 }, ['noop'], null]],
  ['userId', ['x', 1.5, 2 ** 31, -(2 ** 31) - 1, 1e300, true, {}]],
  ['removeDelay', ['x', 1.5, 2 ** 31, -(2 ** 31) - 1, 1e300, true, {}]],
  ['autoRescheduleOnFailureDelay', ['x', 1.5, 2 ** 31, 1e300]],
  ['maxAttempts', ['x', 1.5, 2 ** 31, 1e300]],
  ['autoRescheduleOnFailure', ['true', 1, {}]],
  ['persistent', ['false', 0, []]],
  ['cronSchedule', [5, true, { m: '*' }]],
  ['tag', [5, false, { t: 'x' }, ['a', 'b']]],
  ['due', [5, 1e300, true, { y: 2030 }]],
]
for (const [field, values] of GQL_BAD) {
  values.forEach((value, i) => {
    const input = { type: 'noop', [field]: value }
    cases.push({
      category: 'GraphQL types',
      name: `submitJob: ${field} = ${show(value)}`,
      as: 'user',
      query: SUBMIT,
      variables: { input },
      expect: coercion(`at "input.${field}"`),
    })
    if (i % 2 === 0)
      cases.push({
        category: 'GraphQL types',
        name: `submitJobs item 2: ${field} = ${show(value)}`,
        as: 'user',
        query: BATCH,
        variables: { jobs: batchWith(2, input) },
        expect: coercion(`at "jobs[2].${field}"`),
      })
  })
}
add('GraphQL types', [
  ...['bogus', 'Type', 'constructor'].map((key) => ({
    name: `submitJob: an unknown input field ${key}`,
    as: 'user' as const,
    query: SUBMIT,
    variables: { input: { type: 'noop', [key]: 1 } },
    expect: coercion(`Field "${key}" is not defined by type "SubmitJobInput"`),
  })),
  {
    name: 'submitJob: an own __proto__ input field',
    as: 'user',
    query: SUBMIT,
    variables: { input: JSON.parse('{"type":"noop","__proto__":{"userId":1}}') },
    expect: coercion('Field "__proto__" is not defined by type "SubmitJobInput"'),
  },
  {
    name: 'submitJobs item 1: an unknown input field',
    as: 'user',
    query: BATCH,
    variables: { jobs: batchWith(1, { type: 'noop', bogus: 1 }) },
    expect: coercion('at "jobs[1]"; Field "bogus" is not defined'),
  },
  { name: 'submitJob: no type', as: 'user', query: SUBMIT, variables: { input: { due: FAR } }, expect: coercion('Field "type" of required type "String!" was not provided') },
  { name: 'submitJob: input is a string', as: 'user', query: SUBMIT, variables: { input: 'noop' }, expect: coercion('Expected type "SubmitJobInput" to be an object') },
  { name: 'submitJob: no input at all', as: 'user', query: SUBMIT, variables: {}, expect: coercion('Variable "$input" of required type "SubmitJobInput!" was not provided') },
  { name: 'submitJobs: jobs is a string', as: 'user', query: BATCH, variables: { jobs: 'x' }, expect: coercion('Expected type "SubmitJobInput" to be an object') },
  { name: 'submitJobs: a null item', as: 'user', query: BATCH, variables: { jobs: [{ type: 'noop' }, null] }, expect: coercion('at "jobs[1]"') },
  { name: 'submitJobs: jobs null', as: 'user', query: BATCH, variables: { jobs: null }, expect: coercion('Variable "$jobs" of non-null type') },
  { name: 'jobs: limit "x"', as: 'user', query: JOBS, variables: { limit: 'x' }, expect: coercion('Variable "$limit" got invalid value "x"') },
  { name: 'jobs: limit 2^31', as: 'user', query: JOBS, variables: { limit: 2 ** 31 }, expect: coercion('Variable "$limit" got invalid value 2147483648') },
  { name: 'jobs: offset 1.5', as: 'user', query: JOBS, variables: { offset: 1.5 }, expect: coercion('Variable "$offset" got invalid value 1.5') },
  { name: 'jobs: offset -2^31-1', as: 'user', query: JOBS, variables: { offset: -(2 ** 31) - 1 }, expect: coercion('Variable "$offset" got invalid value') },
  { name: 'jobs: order SIDEWAYS', as: 'user', query: JOBS, variables: { order: 'SIDEWAYS' }, expect: coercion('Variable "$order" got invalid value "SIDEWAYS"') },
  { name: 'jobs: filter.status NOPE', as: 'user', query: JOBS, variables: { filter: { status: 'NOPE' } }, expect: coercion('at "filter.status"') },
  { name: 'jobs: filter.status lower case', as: 'user', query: JOBS, variables: { filter: { status: 'pending' } }, expect: coercion('at "filter.status"') },
  { name: 'jobs: filter.userId "x"', as: 'user', query: JOBS, variables: { filter: { userId: 'x' } }, expect: coercion('at "filter.userId"') },
  { name: 'jobs: filter.tag 5', as: 'user', query: JOBS, variables: { filter: { tag: 5 } }, expect: coercion('at "filter.tag"') },
  { name: 'jobs: unknown filter field', as: 'user', query: JOBS, variables: { filter: { bogus: 1 } }, expect: coercion('Field "bogus" is not defined by type "JobFilter"') },
  { name: 'job: id 1.5', as: 'user', query: JOB, variables: { id: 1.5 }, expect: coercion('Variable "$id" got invalid value 1.5') },
  { name: 'job: id true', as: 'user', query: JOB, variables: { id: true }, expect: coercion('Variable "$id" got invalid value true') },
  { name: 'job: id {}', as: 'user', query: JOB, variables: { id: {} }, expect: coercion('Variable "$id" got invalid value {}') },
  { name: 'job: id null', as: 'user', query: JOB, variables: { id: null }, expect: coercion('Variable "$id" of non-null type "ID!"') },
  { name: 'myNotifications: limit "x"', as: 'user', query: NOTIFICATIONS, variables: { limit: 'x' }, expect: coercion('Variable "$limit" got invalid value "x"') },
  { name: 'generateSiweMessage: address 5', as: 'anon', query: GENERATE, variables: { address: 5 }, expect: coercion('Variable "$address" got invalid value 5') },
  { name: 'generateSiweMessage: address null', as: 'anon', query: GENERATE, variables: { address: null }, expect: coercion('Variable "$address" of non-null type') },
  { name: 'authenticateWithSiwe: signature {}', as: 'anon', query: AUTHENTICATE, variables: { message: 'x', signature: {} }, expect: coercion('Variable "$signature" got invalid value {}') },
  { name: 'authenticateWithSiwe: message [1]', as: 'anon', query: AUTHENTICATE, variables: { message: [1], signature: '0x00' }, expect: coercion('Variable "$message" got invalid value [1]') },
])

// Wrong types and shapes written into the document itself: graphql-js refuses the document.
add('GraphQL types', [
  { name: 'literal: limit "x"', as: 'user', query: `{ jobs(limit: "x") { total } }`, expect: invalid('"x"') },
  { name: 'literal: limit 99999999999', as: 'user', query: `{ jobs(limit: 99999999999) { total } }`, expect: invalid('99999999999') },
  { name: 'literal: offset 1.5', as: 'user', query: `{ jobs(offset: 1.5) { total } }`, expect: invalid('1.5') },
  { name: 'literal: status NOPE', as: 'user', query: `{ jobs(filter: { status: NOPE }) { total } }`, expect: invalid('NOPE') },
  { name: 'literal: order as a string', as: 'user', query: `{ jobs(order: "NEWEST_FIRST") { total } }`, expect: invalid('"NEWEST_FIRST"') },
  { name: 'literal: unknown filter field', as: 'user', query: `{ jobs(filter: { bogus: 1 }) { total } }`, expect: invalid('bogus: 1') },
  { name: 'literal: id 1.5', as: 'user', query: `{ job(id: 1.5) { id } }`, expect: invalid('1.5') },
  { name: 'literal: id missing', as: 'user', query: `{ job { id } }`, expect: invalid('job') },
  { name: 'literal: an object field without a selection', as: 'user', query: `{ jobs }`, expect: invalid('jobs') },
  { name: 'literal: a selection on a scalar', as: 'user', query: `{ me { id { x } } }`, expect: invalid('{ x }') },
  { name: 'literal: an unknown field', as: 'user', query: `{ jobs { nope } }`, expect: invalid('nope') },
  { name: 'literal: an unknown argument', as: 'user', query: `mutation { submitJob(input: { type: "noop" }, x: 1) { id } }`, expect: invalid('x: 1') },
  { name: 'literal: type 5', as: 'user', query: `mutation { submitJob(input: { type: 5 }) { id } }`, expect: invalid('5') },
  { name: 'literal: removeDelay 1.5', as: 'user', query: `mutation { submitJob(input: { type: "noop", removeDelay: 1.5 }) { id } }`, expect: invalid('1.5') },
  { name: 'literal: maxAttempts 2^31', as: 'user', query: `mutation { submitJob(input: { type: "noop", maxAttempts: 2147483648 }) { id } }`, expect: invalid('2147483648') },
  { name: 'literal: persistent "yes"', as: 'user', query: `mutation { submitJob(input: { type: "noop", persistent: "yes" }) { id } }`, expect: invalid('"yes"') },
  { name: 'literal: an unknown input field', as: 'user', query: `mutation { submitJob(input: { type: "noop", bogus: 1 }) { id } }`, expect: invalid('bogus: 1') },
  { name: 'literal: input without type', as: 'user', query: `mutation { submitJob(input: {}) { id } }`, expect: invalid('{}') },
  { name: 'literal: due 5 (the DateTime scalar)', as: 'user', query: `mutation { submitJob(input: { type: "noop", due: 5 }) { id } }`, expect: { code: 'BAD_USER_INPUT', named: 'DateTime' } },
  { name: 'a variable of the wrong declared type', as: 'user', query: `query ($l: String) { jobs(limit: $l) { total } }`, variables: { l: '5' }, expect: invalid('$l') },
  { name: 'an undeclared variable', as: 'user', query: `{ jobs(limit: $undeclared) { total } }`, expect: invalid('$undeclared') },
  { name: 'a variable of an unknown type', as: 'user', query: `query ($x: Nope) { me { id } }`, expect: invalid('Nope') },
  { name: 'a fragment on the wrong type', as: 'user', query: `{ ...F } fragment F on User { id }`, expect: invalid('...F') },
  { name: 'a syntax error', as: 'user', query: `{ me { id `, expect: { code: 'GRAPHQL_PARSE_FAILED' } },
  { name: 'an empty document', as: 'user', query: ` `, expect: { code: 'GRAPHQL_PARSE_FAILED' } },
])

// ---------------------------------------------------------------------------------------------------------
// Ids, limits and offsets.

const BAD_IDS = ['abc', '-1', '0', '01', '1.5', '1e3', ' 1', '1 ', '0x10', '', '18446744073709551616', '9007199254740993', '99999999999999999', '1\u0000', '\ud800', '1; DROP TABLE worker_jobs']
for (const [op, query] of [
  ['job', JOB],
  ['cancelJob', CANCEL],
  ['rerunJob', RERUN],
  ['markNotificationRead', MARK],
] as const) {
  for (const id of op === 'job' ? BAD_IDS : BAD_IDS.filter((_, i) => i % 3 === 0))
    cases.push({ category: 'ids', name: `${op}(id: ${show(id)})`, as: 'user', query, variables: { id }, expect: bad('id') })
}
add('ids', [
  { name: 'job(id: 2^64 as a JSON number)', as: 'user', query: JOB, variables: { id: 2 ** 64 }, expect: bad('id') },
  { name: 'cancelJob(id: -1 as a JSON number)', as: 'user', query: CANCEL, variables: { id: -1 }, expect: bad('id') },
  { name: 'job(id) past every row is null', as: 'user', query: JOB, variables: { id: '9007199254740991' }, expect: { returns: { job: null } } },
  { name: 'cancelJob of no such job', as: 'user', query: CANCEL, variables: { id: '999999' }, expect: { code: 'NOT_FOUND', field: 'id' } },
  { name: 'rerunJob of no such job', as: 'user', query: RERUN, variables: { id: '999999' }, expect: { code: 'NOT_FOUND', field: 'id' } },
  { name: 'markNotificationRead of no such notification', as: 'user', query: MARK, variables: { id: '999999' }, expect: { code: 'NOT_FOUND', field: 'id' } },
  { name: 'cancelJob as admin, id 0', as: 'admin', query: CANCEL, variables: { id: '0' }, expect: bad('id') },
  { name: 'rerunJob as admin, id 2^64', as: 'admin', query: RERUN, variables: { id: '18446744073709551616' }, expect: bad('id') },
])

for (const [limit, offset, field] of [
  [0, 0, 'limit'],
  [-1, 0, 'limit'],
  [101, 0, 'limit'],
  [2 ** 31 - 1, 0, 'limit'],
  [-(2 ** 31), 0, 'limit'],
  [10, -1, 'offset'],
  [10, 10_001, 'offset'],
  [10, 2 ** 31 - 1, 'offset'],
  [10, -(2 ** 31), 'offset'],
] as const) {
  cases.push({ category: 'paging', name: `jobs(limit: ${limit}, offset: ${offset})`, as: 'user', query: JOBS, variables: { limit, offset }, expect: bad(field) })
  if (field === 'limit' || offset < 0)
    cases.push({ category: 'paging', name: `myNotifications(limit: ${limit}, offset: ${offset})`, as: 'user', query: NOTIFICATIONS, variables: { limit, offset }, expect: bad(field) })
}
add('paging', [
  { name: 'jobs as admin, limit 1000', as: 'admin', query: JOBS, variables: { limit: 1000 }, expect: bad('limit') },
  { name: 'jobs filter.tag of 201 characters', as: 'user', query: JOBS, variables: { filter: { tag: 'x'.repeat(201) } }, expect: bad('filter.tag') },
  { name: 'jobs filter.tag with NUL', as: 'user', query: JOBS, variables: { filter: { tag: 'a\u0000' } }, expect: bad('filter.tag') },
  { name: 'jobs filter.type with a lone surrogate', as: 'user', query: JOBS, variables: { filter: { type: '\ud800' } }, expect: bad('filter.type') },
  { name: 'jobs filter.type of 10,000 characters', as: 'user', query: JOBS, variables: { filter: { type: 'x'.repeat(10_000) } }, expect: bad('filter.type') },
  {
    name: 'jobs filter.tag of 300 KB written into the document',
    as: 'user',
    query: `{ jobs(filter: { tag: "${'x'.repeat(300_000)}" }) { total } }`,
    expect: bad('filter.tag'),
  },
])

// ---------------------------------------------------------------------------------------------------------
// Stored verbatim: SQL, escapes, unicode, prototype-ish keys. Each writes exactly one row (counted at the end).

const SQL_DROP = "'; DROP TABLE worker_jobs; --"
add('stored verbatim', [
  {
    name: 'SQL in data and tag',
    as: 'user',
    query: SUBMIT,
    variables: { input: { type: 'noop', due: FAR, tag: SQL_DROP, data: { q: SQL_DROP, r: '" OR 1=1 --', s: "Robert'); DROP TABLE users;--" } } },
    expect: { stored: { data: { q: SQL_DROP, r: '" OR 1=1 --', s: "Robert'); DROP TABLE users;--" }, tag: SQL_DROP } },
  },
  {
    name: 'SQL in a data key, placeholders and LIKE wildcards',
    as: 'user',
    query: SUBMIT,
    variables: { input: { type: 'noop', due: FAR, tag: '" OR 1=1 --', data: { "'); DELETE FROM users; --": '$1 $2 ? %_ \\x00' } } },
    expect: { stored: { data: { "'); DELETE FROM users; --": '$1 $2 ? %_ \\x00' }, tag: '" OR 1=1 --' } },
  },
  {
    name: 'SQL in a GraphQL literal',
    as: 'user',
    query: `mutation { submitJob(input: { type: "noop", due: "${FAR}", tag: "lit${SQL_DROP}", data: { q: "\\" OR 1=1", k: ["'", "\\\\"] } }) { id } }`,
    expect: { stored: { data: { q: '" OR 1=1', k: ["'", '\\'] }, tag: `lit${SQL_DROP}` } },
  },
  {
    name: 'backslash-u text (not a NUL, not a surrogate)',
    as: 'user',
    query: SUBMIT,
    variables: { input: { type: 'noop', due: FAR, tag: '\\u0000', data: { t: '\\u0000 \\ud800 \\\\', '\\u0000': 1 } } },
    expect: { stored: { data: { t: '\\u0000 \\ud800 \\\\', '\\u0000': 1 }, tag: '\\u0000' } },
  },
  {
    name: 'surrogate pairs and other unicode',
    as: 'user',
    query: SUBMIT,
    variables: { input: { type: 'noop', due: FAR, tag: '😀🔑', data: { e: '😀', k: { '🔑': 'ß\u200b\ufeff' } } } },
    expect: { stored: { data: { e: '😀', k: { '🔑': 'ß\u200b\ufeff' } }, tag: '😀🔑' } },
  },
  {
    name: 'a constructor.prototype key is a plain key',
    as: 'user',
    query: SUBMIT,
    variables: { input: { type: 'noop', due: FAR, data: { constructor: { prototype: { polluted: 'yes', access: 'user' } } } } },
    expect: { stored: { data: { constructor: { prototype: { polluted: 'yes', access: 'user' } } } } },
  },
  {
    // Refused at any depth: a job type whose schema has a nested object would drop it silently too.
    name: 'a nested __proto__ key is refused by name',
    as: 'user',
    query: SUBMIT,
    variables: { input: { type: 'noop', due: FAR, data: JSON.parse('{"a":{"__proto__":{"polluted":"yes","isAdmin":true}}}') } },
    expect: bad('data.a.__proto__'),
  },
  {
    name: 'numbers at the edges of JSON',
    as: 'user',
    query: SUBMIT,
    variables: { input: { type: 'noop', due: FAR, data: { big: 1e300, tiny: 5e-324, neg: -1, unsafe: 2 ** 60 } } },
    expect: { stored: { data: { big: 1e300, tiny: 5e-324, neg: -1, unsafe: 2 ** 60 } } },
  },
  {
    name: '100 KiB of data (under the limit)',
    as: 'user',
    query: SUBMIT,
    variables: { input: { type: 'noop', due: FAR, data: { s: 'y'.repeat(100 * 1024) } } },
    expect: { stored: { data: { s: 'y'.repeat(100 * 1024) } } },
  },
  {
    name: '300 KiB of data as admin (the data limit is a user limit)',
    as: 'admin',
    query: SUBMIT,
    variables: { input: { type: 'noop', due: FAR, data: { s: tooBig } } },
    expect: { stored: { data: { s: tooBig } } },
  },
  // What was stored is found by exact match, and nothing else is: no string was ever spliced into SQL.
  { name: 'jobs filtered by the SQL tag finds exactly that job', as: 'user', query: JOBS, variables: { filter: { tag: SQL_DROP } }, expect: { returns: { jobs: { total: 1 } } } },
  { name: 'jobs filtered by tag "%" finds nothing', as: 'user', query: JOBS, variables: { filter: { tag: '%' } }, expect: { returns: { jobs: { total: 0 } } } },
  { name: 'jobs filtered by tag "_" finds nothing', as: 'user', query: JOBS, variables: { filter: { tag: '_' } }, expect: { returns: { jobs: { total: 0 } } } },
  { name: "jobs filtered by type \"noop' OR '1'='1\" finds nothing", as: 'user', query: JOBS, variables: { filter: { type: "noop' OR '1'='1" } }, expect: { returns: { jobs: { total: 0 } } } },
  { name: 'an empty batch writes nothing', as: 'user', query: BATCH, variables: { jobs: [] }, expect: { returns: { submitJobs: [] } } },
])

// `__proto__` at the top of data: zod's object copy must neither drop it silently nor set a prototype.
const PROTO_DATA = '{"__proto__":{"isAdmin":true,"access":"user","polluted":"yes"},"x":1}'
add('__proto__ keys', [
  {
    name: 'a top-level __proto__ key in data (variables)',
    as: 'user',
    query: SUBMIT,
    variables: { input: { type: 'noop', due: FAR, data: JSON.parse(PROTO_DATA) } },
    expect: { storedOrRefused: { data: JSON.parse(PROTO_DATA), refusal: bad('data.__proto__') } },
  },
  {
    name: 'a top-level __proto__ key in data (GraphQL literal)',
    as: 'user',
    query: `mutation { submitJob(input: { type: "noop", due: "${FAR}", data: { __proto__: { isAdmin: true, access: "user", polluted: "yes" }, x: 1 } }) { id } }`,
    expect: { storedOrRefused: { data: JSON.parse(PROTO_DATA), refusal: bad('data.__proto__') } },
  },
  {
    name: 'a top-level __proto__ key in data of batch item 1',
    as: 'user',
    query: BATCH,
    variables: { jobs: [{ type: 'noop', due: FAR, tag: 'proto-batch-0' }, { type: 'noop', due: FAR, data: JSON.parse(PROTO_DATA) }] },
    // Checked for item 1 only (item 0 is plain): see the storedOrRefused handling.
    expect: { storedOrRefused: { data: JSON.parse(PROTO_DATA), refusal: bad('jobs[1].data.__proto__') } },
  },
  {
    name: 'a top-level __proto__ key in data as admin',
    as: 'admin',
    query: SUBMIT,
    variables: { input: { type: 'noop', due: FAR, data: JSON.parse(PROTO_DATA) } },
    expect: { storedOrRefused: { data: JSON.parse(PROTO_DATA), refusal: bad('data.__proto__') } },
  },
  // A polluted Object.prototype in the server would show here: `access: "user"` on every object would let a
  // user submit an admin-only type, `isAdmin: true` would make them an admin.
  { name: 'afterwards, an admin-only type is still refused to a user', as: 'user', query: SUBMIT, variables: { input: { type: 'hang', due: FAR } }, expect: forbidden('type') },
  { name: 'afterwards, workerStatus is still refused to a user', as: 'user', query: WORKER_STATUS, expect: forbidden() },
  { name: 'afterwards, the user is no admin', as: 'user', query: `{ me { isAdmin } }`, expect: { returns: { me: { isAdmin: false } } } },
  { name: 'afterwards, a plain job stores plain data', as: 'user', query: SUBMIT, variables: { input: { type: 'noop', due: FAR, data: {} } }, expect: { stored: { data: {} } } },
])

// ---------------------------------------------------------------------------------------------------------
// Depth, alias, cost, token and directive bombs: refused by the document limits (graphql/limits.ts), never a 500.

const nested = (levels: number) => `{ me ${'{ a '.repeat(levels)}${'} '.repeat(levels)}}`
add('bombs', [
  { name: 'depth 10', as: 'user', query: `{ me { id { a { b { c { d { e { f { g { h } } } } } } } } } }`, expect: limited('maxDepth') },
  { name: 'depth 500', as: 'user', query: nested(500), expect: limited('maxDepth') },
  { name: 'depth 5,000 (stops at the token limit)', as: 'user', query: nested(5000), expect: limited('maxTokens') },
  {
    name: 'depth 10 through fragments',
    as: 'user',
    query: `{ ...A } fragment A on Query { me { ...B } } fragment B on User { id { a { b { c { d { e { f { g } } } } } } } }`,
    expect: limited('maxDepth'),
  },
  { name: '16 aliases', as: 'user', query: `{ ${Array.from({ length: 16 }, (_, i) => `a${i}: me { id }`).join(' ')} }`, expect: limited('maxAliases') },
  { name: '300 aliases', as: 'user', query: `{ ${Array.from({ length: 300 }, (_, i) => `a${i}: me { id }`).join(' ')} }`, expect: limited('maxAliases') },
  {
    name: '16 aliased submitJob mutations (no way around the batch cap)',
    as: 'user',
    query: `mutation { ${Array.from({ length: 16 }, (_, i) => `s${i}: submitJob(input: { type: "noop", due: "${FAR}" }) { id }`).join(' ')} }`,
    expect: limited('maxAliases'),
  },
  {
    name: 'the same list selected 40 times (cost)',
    as: 'user',
    query: `{ ${'jobs { items { id type userId data due started finished result tag status } total } '.repeat(40)}}`,
    expect: limited('costLimit'),
  },
  { name: '1,900 repeated scalar selections (cost)', as: 'user', query: `{ me { ${'id '.repeat(1900)}} }`, expect: limited('costLimit') },
  { name: '600 repeated fields (tokens)', as: 'user', query: `{ ${'me { id } '.repeat(600)}}`, expect: limited('maxTokens') },
  { name: 'a list literal nested 3,000 deep (tokens)', as: 'user', query: `{ job(id: ${'['.repeat(3000)}1${']'.repeat(3000)}) { id } }`, expect: limited('maxTokens') },
  {
    name: '500 jobs written inline (tokens)',
    as: 'user',
    query: `mutation { submitJobs(jobs: [${'{ type: "noop" } '.repeat(500)}]) { id } }`,
    expect: limited('maxTokens'),
  },
  { name: '25 directives', as: 'user', query: `{ me { id ${'@include(if: true) '.repeat(25)}} }`, expect: limited('maxDirectives') },
  { name: 'a fragment cycle', as: 'user', query: `{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }`, expect: invalid('...B') },
  { name: 'a fragment spread in itself', as: 'user', query: `{ ...A } fragment A on Query { me { id } ...A }`, expect: invalid('...A }') },
  { name: 'depth 10 as anonymous', as: 'anon', query: `{ me { id { a { b { c { d { e { f { g { h } } } } } } } } } }`, expect: limited('maxDepth') },
  {
    name: 'variables nested 100 deep',
    as: 'user',
    query: SUBMIT,
    variables: { input: { type: 'noop', data: { x: JSON.parse(`${'['.repeat(100)}${']'.repeat(100)}`) } } },
    expect: { code: 'BAD_REQUEST', status: 400 },
  },
  {
    name: 'variables nested 10,000 deep',
    as: 'user',
    http: { body: () => `{"query":${JSON.stringify(SUBMIT)},"variables":{"input":{"type":"noop","data":${'['.repeat(10_000)}${']'.repeat(10_000)}}}}` },
    expect: { code: 'BAD_REQUEST', status: 400 },
  },
  {
    name: 'GET with variables nested 100 deep',
    as: 'user',
    http: { method: 'GET', path: `/graphql?query=${encodeURIComponent('{ me { id } }')}&variables=${encodeURIComponent(`{"x":${'['.repeat(100)}${']'.repeat(100)}}`)}` },
    expect: { code: 'BAD_REQUEST', status: 400 },
  },
])

// ---------------------------------------------------------------------------------------------------------
// Huge batches and bodies.

const noops = (n: number) => Array.from({ length: n }, () => ({ type: 'noop', due: FAR }))
add('batches and bodies', [
  { name: `SUBMIT_BATCH_MAX+1 (${SUBMIT_BATCH_MAX + 1}) jobs as user`, as: 'user', query: BATCH, variables: { jobs: noops(SUBMIT_BATCH_MAX + 1) }, expect: bad('jobs') },
  { name: '5,000 jobs as user', as: 'user', query: BATCH, variables: { jobs: noops(5000) }, expect: bad('jobs') },
  {
    name: `ADMIN_SUBMIT_BATCH_MAX+1 (${ADMIN_SUBMIT_BATCH_MAX + 1}) jobs as admin`,
    as: 'admin',
    query: BATCH,
    variables: { jobs: Array.from({ length: ADMIN_SUBMIT_BATCH_MAX + 1 }, () => ({ type: 'noop' })) },
    expect: bad('jobs'),
  },
  {
    name: '100,000 jobs as admin: over the body limit',
    as: 'admin',
    query: BATCH,
    variables: { jobs: Array.from({ length: 100_000 }, () => ({ type: 'noop' })) },
    expect: { code: 'PAYLOAD_TOO_LARGE', status: 413 },
  },
  {
    name: 'a batch with a bad item deep inside writes nothing',
    as: 'user',
    query: BATCH,
    variables: { jobs: [...noops(17), { type: 'noop', removeDelay: -1 }, ...noops(2)] },
    expect: bad('jobs[17].removeDelay'),
  },
  {
    name: 'a batch with one tag twice',
    as: 'user',
    query: BATCH,
    variables: { jobs: [{ type: 'noop', due: FAR, tag: 'twice' }, { type: 'noop', due: FAR, tag: 'twice' }] },
    expect: bad('jobs[1].tag'),
  },
  {
    name: `a body over HTTP_MAX_BODY_BYTES (declared length)`,
    as: 'user',
    query: SUBMIT,
    variables: { input: { type: 'noop', data: { s: 'z'.repeat(HTTP_MAX_BODY_BYTES) } } },
    expect: { code: 'PAYLOAD_TOO_LARGE', status: 413 },
  },
  {
    name: 'a streamed body over HTTP_MAX_BODY_BYTES (no length)',
    as: 'user',
    http: {
      body: () => {
        const bytes = new TextEncoder().encode(JSON.stringify({ query: SUBMIT, variables: { input: { type: 'noop', data: { s: 'z'.repeat(2 * HTTP_MAX_BODY_BYTES) } } } }))
        return new ReadableStream({
          start(c) {
            for (let i = 0; i < bytes.length; i += 64 * 1024) c.enqueue(bytes.slice(i, i + 64 * 1024))
            c.close()
          },
        })
      },
    },
    expect: { code: 'PAYLOAD_TOO_LARGE', status: 413 },
  },
])

// ---------------------------------------------------------------------------------------------------------
// Malformed HTTP requests.

add('HTTP', [
  { name: 'a body that is not JSON', as: 'user', http: { body: () => '{"query":' }, expect: { code: 'BAD_REQUEST', status: 400 } },
  { name: 'a JSON null body', as: 'user', http: { body: () => 'null' }, expect: { code: 'BAD_REQUEST', status: 400 } },
  { name: 'a JSON string body', as: 'user', http: { body: () => '"{ me { id } }"' }, expect: { code: 'BAD_REQUEST', status: 400 } },
  { name: 'a batch (JSON array) of operations', as: 'user', http: { body: () => JSON.stringify([{ query: '{ me { id } }' }, { query: '{ me { id } }' }]) }, expect: { code: 'BAD_REQUEST', status: 400 } },
  { name: 'query is a number', as: 'user', http: { body: () => JSON.stringify({ query: 5 }) }, expect: { code: 'BAD_REQUEST', status: 400 } },
  { name: 'variables is a string', as: 'user', http: { body: () => JSON.stringify({ query: '{ me { id } }', variables: 'x' }) }, expect: { code: 'BAD_REQUEST', status: 400 } },
  { name: 'no query', as: 'user', http: { body: () => JSON.stringify({ variables: {} }) }, expect: { code: 'BAD_REQUEST' } },
  {
    name: 'an unknown operationName',
    as: 'user',
    http: { body: () => JSON.stringify({ query: '{ me { id } }', operationName: 'nope' }) },
    expect: { code: 'OPERATION_RESOLUTION_FAILURE', status: 400 },
  },
  {
    name: 'two operations and no operationName',
    as: 'user',
    http: { body: () => JSON.stringify({ query: 'query a { me { id } } query b { me { id } }' }) },
    expect: { code: 'OPERATION_RESOLUTION_FAILURE', status: 400 },
  },
  { name: 'Content-Type text/plain', as: 'user', http: { headers: { 'content-type': 'text/plain' }, body: () => JSON.stringify({ query: '{ me { id } }' }) }, expect: { code: 'UNSUPPORTED_MEDIA_TYPE', status: 415 } },
  {
    name: 'a urlencoded form mutation',
    as: 'user',
    http: { headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: () => `query=${encodeURIComponent('mutation { markAllNotificationsRead }')}` },
    expect: { code: 'UNSUPPORTED_MEDIA_TYPE', status: 415 },
  },
  { name: 'no Content-Type', as: 'user', http: { headers: { 'content-type': null }, body: () => JSON.stringify({ query: '{ me { id } }' }) }, expect: { code: 'UNSUPPORTED_MEDIA_TYPE', status: 415 } },
  {
    name: 'a mutation over GET',
    as: 'user',
    http: { method: 'GET', path: `/graphql?query=${encodeURIComponent('mutation { markAllNotificationsRead }')}` },
    expect: { code: 'BAD_REQUEST', status: 405 },
  },
])

// ---------------------------------------------------------------------------------------------------------
// Sign-in with Ethereum: addresses, messages and signatures.

const HEX40 = 'abcdef0123456789abcdef0123456789abcdef01'
for (const address of [
  'nope',
  '',
  '0x',
  `0x${HEX40.slice(1)}`,
  `0x${HEX40}0`,
  HEX40,
  `0X${HEX40}`,
  `0x${'g'.repeat(40)}`,
  ` 0x${HEX40}`,
  `0x${HEX40}\n`,
  `0x${HEX40}\u0000`,
  `0x${HEX40.slice(1)}\ud800`,
  '0xAbCdEf0000000000000000000000000000000000',
  "0x' OR 1=1 --",
  `0x${'a'.repeat(100_000)}`,
])
  cases.push({ category: 'SIWE', name: `generateSiweMessage(address: ${show(address)})`, as: 'anon', query: GENERATE, variables: { address }, expect: bad('address') })

const refusedSignIn = (field: string): Refusal => ({ code: 'UNAUTHENTICATED', field })
/** A SIWE message as this server would issue it, but made up here: its nonce was never issued. */
const madeUp = (ctx: Ctx, change: Partial<Parameters<typeof createSiweMessage>[0]> = {}) => {
  const base = new URL(ctx.url)
  return createSiweMessage({
    address: ctx.wallet.address,
    chainId: 31337,
    domain: base.host,
    uri: base.origin,
    version: '1',
    nonce: 'abcdefgh12345678',
    issuedAt: new Date(),
    expirationTime: new Date(Date.now() + 600_000),
    ...change,
  })
}
/** Messages issued by the server whose nonce a case leaves unused (counted at the end). */
let unusedNonces = 0
async function issue(ctx: Ctx, wallet: LocalAccount): Promise<string> {
  const res = await fetch(`${ctx.url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify({ query: GENERATE, variables: { address: wallet.address } }),
  })
  const body = (await res.json()) as any
  if (!body.data?.generateSiweMessage) throw new Error(`generateSiweMessage failed: ${JSON.stringify(body.errors)}`)
  unusedNonces++
  return body.data.generateSiweMessage
}

add('SIWE', [
  { name: 'an empty message', as: 'anon', query: AUTHENTICATE, variables: { message: '', signature: '0x00' }, expect: bad('message') },
  { name: 'a message of 5,000 characters', as: 'anon', query: AUTHENTICATE, variables: { message: 'x'.repeat(5000), signature: '0x00' }, expect: bad('message') },
  { name: 'a message that is no SIWE message', as: 'anon', query: AUTHENTICATE, variables: { message: 'hi', signature: '0x00' }, expect: refusedSignIn('message') },
  { name: 'a message with a NUL', as: 'anon', query: AUTHENTICATE, variables: { message: 'h\u0000i', signature: '0x00' }, expect: refusedSignIn('message') },
  { name: 'a message with a lone surrogate', as: 'anon', query: AUTHENTICATE, variables: { message: 'h\ud800i', signature: '0x00' }, expect: refusedSignIn('message') },
  ...['', 'zz', '0x', '0x0', 'nothex', '0xgg', `0x${'ab'.repeat(10_000)}`, "0x00' OR 1=1"].map((signature) => ({
    name: `a signature ${show(signature)}`,
    as: 'anon' as const,
    query: AUTHENTICATE,
    variables: { message: 'hi', signature },
    expect: bad('signature'),
  })),
  {
    name: 'a message for another domain',
    as: 'anon',
    query: AUTHENTICATE,
    variables: async (ctx) => {
      const message = madeUp(ctx, { domain: 'evil.example', uri: 'https://evil.example' })
      return { message, signature: await ctx.wallet.signMessage({ message }) }
    },
    expect: refusedSignIn('message'),
  },
  {
    name: 'a message for another uri',
    as: 'anon',
    query: AUTHENTICATE,
    variables: async (ctx) => {
      const message = madeUp(ctx, { uri: 'https://evil.example' })
      return { message, signature: await ctx.wallet.signMessage({ message }) }
    },
    expect: refusedSignIn('message'),
  },
  {
    name: 'a message for another chain',
    as: 'anon',
    query: AUTHENTICATE,
    variables: async (ctx) => {
      const message = madeUp(ctx, { chainId: 1 })
      return { message, signature: await ctx.wallet.signMessage({ message }) }
    },
    expect: refusedSignIn('message'),
  },
  {
    name: 'a well-formed message with a nonce never issued',
    as: 'anon',
    query: AUTHENTICATE,
    variables: async (ctx) => {
      const message = madeUp(ctx)
      return { message, signature: await ctx.wallet.signMessage({ message }) }
    },
    expect: refusedSignIn('message'),
  },
  {
    name: 'an issued message signed by another wallet',
    as: 'anon',
    query: AUTHENTICATE,
    variables: async (ctx) => {
      const message = await issue(ctx, ctx.wallet)
      unusedNonces-- // a failed signature check uses its nonce up
      return { message, signature: await newWallet().signMessage({ message }) }
    },
    expect: refusedSignIn('signature'),
  },
  {
    name: 'an issued message with 65 bytes of zeros for a signature',
    as: 'anon',
    query: AUTHENTICATE,
    variables: async (ctx) => {
      const message = await issue(ctx, ctx.wallet)
      unusedNonces-- // a failed signature check uses its nonce up
      return { message, signature: `0x${'00'.repeat(65)}` }
    },
    expect: refusedSignIn('signature'),
  },
  {
    name: 'an issued message altered after signing',
    as: 'anon',
    query: AUTHENTICATE,
    variables: async (ctx) => {
      const message = await issue(ctx, ctx.wallet)
      const signature = await ctx.wallet.signMessage({ message })
      unusedNonces-- // a failed signature check uses its nonce up
      return { message: message.replace(/^Sign in to .*$/m, 'Send all funds.'), signature }
    },
    expect: refusedSignIn('signature'),
  },
  {
    name: "an issued message with another wallet's address, signed by that wallet",
    as: 'anon',
    query: AUTHENTICATE,
    variables: async (ctx) => {
      const other = newWallet()
      const message = (await issue(ctx, ctx.wallet)).replace(ctx.wallet.address, other.address)
      expect(parseSiweMessage(message).address).toBe(other.address)
      return { message, signature: await other.signMessage({ message }) }
    },
    expect: refusedSignIn('message'),
  },
  {
    name: 'a nonce used once already',
    as: 'anon',
    query: AUTHENTICATE,
    variables: async (ctx) => {
      const message = await issue(ctx, ctx.wallet)
      const signature = await ctx.wallet.signMessage({ message })
      const first = await gqlAs(ctx.url, AUTHENTICATE, { message, signature }, null)
      if (!first.body?.data?.authenticateWithSiwe) throw new Error(`the first sign-in failed: ${JSON.stringify(first.body)}`)
      unusedNonces--
      return { message, signature }
    },
    expect: refusedSignIn('message'),
  },
])

// ---------------------------------------------------------------------------------------------------------
// Authorization headers and anonymous callers.

const SECRET = new TextEncoder().encode(TEST_ENV.SESSION_SECRET)
const jwt = (ctx: Ctx, claims: Record<string, unknown>, opts: { sub?: string; exp?: number | string; iss?: string; secret?: Uint8Array } = {}) => {
  const origin = new URL(ctx.url).origin
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(opts.sub ?? String(ctx.user.userId))
    .setIssuer(opts.iss ?? origin)
    .setAudience(origin)
    .setIssuedAt(Math.floor(Date.now() / 1000) - 100)
    .setExpirationTime(opts.exp ?? '1h')
    .sign(opts.secret ?? SECRET)
}
const addr = (ctx: Ctx) => ({ addr: ctx.wallet.address.toLowerCase() })
const HEADERS: [name: string, header: string | ((ctx: Ctx) => string | Promise<string>)][] = [
  ['Basic credentials', 'Basic dXNlcjpwYXNz'],
  ['Bearer and nothing', 'Bearer'],
  ['Bearer with two words', 'Bearer a b'],
  ['Bearer with 5,000 characters', `Bearer ${'a'.repeat(5000)}`],
  ['a lower-case scheme', (ctx) => `bearer ${ctx.user.token}`],
  ['two spaces after Bearer', (ctx) => `Bearer  ${ctx.user.token}`],
  ['Latin-1 in the token', 'Bearer t\u00f6k\u00e9n'],
  ['Token scheme', 'Token abc'],
  ['garbage', 'Bearer garbage'],
  ['a session token with a byte more', (ctx) => `Bearer ${ctx.user.token}x`],
  ['a session token cut short', (ctx) => `Bearer ${ctx.user.token.slice(0, -2)}`],
  ['the API token with a byte less', `Bearer ${TEST_ENV.ADMIN_API_TOKEN.slice(0, -1)}`],
  ['an expired session', async (ctx) => `Bearer ${await jwt(ctx, addr(ctx), { exp: Math.floor(Date.now() / 1000) - 10 })}`],
  ['a session signed with another key', async (ctx) => `Bearer ${await jwt(ctx, addr(ctx), { secret: new TextEncoder().encode('another-secret-another-secret-another-secret') })}`],
  ['a session for another issuer', async (ctx) => `Bearer ${await jwt(ctx, addr(ctx), { iss: 'https://elsewhere.example' })}`],
  ['a session with sub "abc"', async (ctx) => `Bearer ${await jwt(ctx, addr(ctx), { sub: 'abc' })}`],
  ['a session with sub "0"', async (ctx) => `Bearer ${await jwt(ctx, addr(ctx), { sub: '0' })}`],
  ['a session with sub "-1"', async (ctx) => `Bearer ${await jwt(ctx, addr(ctx), { sub: '-1' })}`],
  ['a session whose addr is no address', async (ctx) => `Bearer ${await jwt(ctx, { addr: "' OR 1=1 --" })}`],
  ['a session without addr', async (ctx) => `Bearer ${await jwt(ctx, {})}`],
  [
    'alg none',
    (ctx) => {
      const origin = new URL(ctx.url).origin
      const payload = Buffer.from(JSON.stringify({ sub: String(ctx.user.userId), ...addr(ctx), iss: origin, aud: origin, exp: 9999999999 })).toString('base64url')
      return `Bearer ${Buffer.from('{"alg":"none"}').toString('base64url')}.${payload}.`
    },
  ],
]
HEADERS.forEach(([name, header], i) => {
  cases.push({ category: 'Authorization', name: `jobs with ${name}`, as: 'anon', query: `{ jobs { total } }`, http: { authorization: header }, expect: unauthenticated })
  if (i % 2 === 0)
    cases.push({ category: 'Authorization', name: `submitJob with ${name}`, as: 'anon', query: SUBMIT, variables: { input: { type: 'noop' } }, http: { authorization: header }, expect: unauthenticated })
})

add('anonymous', [
  { name: 'submitJob', as: 'anon', query: SUBMIT, variables: { input: { type: 'noop' } }, expect: unauthenticated },
  { name: 'submitJobs', as: 'anon', query: BATCH, variables: { jobs: noops(2) }, expect: unauthenticated },
  { name: 'cancelJob', as: 'anon', query: CANCEL, variables: { id: '1' }, expect: unauthenticated },
  { name: 'rerunJob', as: 'anon', query: RERUN, variables: { id: '1' }, expect: unauthenticated },
  { name: 'markNotificationRead', as: 'anon', query: MARK, variables: { id: '1' }, expect: unauthenticated },
  { name: 'markAllNotificationsRead', as: 'anon', query: `mutation { markAllNotificationsRead }`, expect: unauthenticated },
  { name: 'jobs', as: 'anon', query: JOBS, expect: unauthenticated },
  { name: 'job', as: 'anon', query: JOB, variables: { id: '1' }, expect: unauthenticated },
  { name: 'myNotifications', as: 'anon', query: NOTIFICATIONS, expect: unauthenticated },
  { name: 'workerStatus', as: 'anon', query: WORKER_STATUS, expect: unauthenticated },
  // Refused before validation: an anonymous caller learns nothing about what would be valid.
  { name: 'submitJob with a NUL tag', as: 'anon', query: SUBMIT, variables: { input: { type: 'noop', tag: '\u0000' } }, expect: unauthenticated },
  { name: 'submitJob of an admin-only type', as: 'anon', query: SUBMIT, variables: { input: { type: 'hang' } }, expect: unauthenticated },
  { name: 'submitJob of an unknown type', as: 'anon', query: SUBMIT, variables: { input: { type: 'nope' } }, expect: unauthenticated },
  { name: `submitJobs of ${SUBMIT_BATCH_MAX + 1} jobs`, as: 'anon', query: BATCH, variables: { jobs: noops(SUBMIT_BATCH_MAX + 1) }, expect: unauthenticated },
  { name: 'cancelJob of id "abc"', as: 'anon', query: CANCEL, variables: { id: 'abc' }, expect: unauthenticated },
  { name: 'a subscription over POST', as: 'anon', query: `subscription { notificationAdded { id } }`, expect: unauthenticated },
])

// ---------------------------------------------------------------------------------------------------------
// The run

let db: TestDatabase
let server: ServerProcess
let sql: postgres.Sql
let ctx: Ctx
let rssBefore = 0
/** Ids of the rows the table meant to write. */
const storedIds: string[] = []
let errorLogsBefore = 0

const rssOf = (pid: number): number => {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (!m) throw new Error(`no VmRSS for ${pid}`)
  return Number(m[1]) * 1024
}

interface Answer {
  status: number
  body: any
  text: string
}

async function gqlAs(url: string, query: string, variables: Vars | undefined, token: string | null): Promise<Answer> {
  const res = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  })
  const text = await res.text()
  return { status: res.status, text, body: parse(text) }
}

function parse(text: string): any {
  try {
    return JSON.parse(text)
  } catch {
    return null
  }
}

async function send(c: Case): Promise<Answer> {
  const token = c.as === 'user' ? ctx.user.token : c.as === 'admin' ? TEST_ENV.ADMIN_API_TOKEN : null
  const headers = new Headers({ 'content-type': 'application/json', accept: 'application/json' })
  if (token) headers.set('authorization', `Bearer ${token}`)
  const auth = c.http?.authorization
  if (auth !== undefined) headers.set('authorization', typeof auth === 'function' ? await auth(ctx) : auth)
  for (const [k, v] of Object.entries(c.http?.headers ?? {})) {
    if (v === null) headers.delete(k)
    else headers.set(k, v)
  }
  const method = c.http?.method ?? 'POST'
  const variables = typeof c.variables === 'function' ? await c.variables(ctx) : c.variables
  const body = method === 'GET' ? undefined : c.http?.body ? c.http.body() : JSON.stringify({ query: c.query, variables })
  const res = await fetch(`${ctx.url}${c.http?.path ?? '/graphql'}`, { method, headers, body })
  const text = await res.text()
  return { status: res.status, text, body: parse(text) }
}

/** What came back, in the shape of what was expected, so a mismatch shows everything at once. */
function refusalOf(expected: Refusal, c: Case, res: Answer): Refusal {
  const e = res.body?.errors?.[0]
  const actual: Refusal = { code: e?.extensions?.code ?? `(no code; HTTP ${res.status}: ${res.text.slice(0, 300)})` }
  if ('field' in expected) actual.field = e?.extensions?.field
  if (expected.named !== undefined) actual.named = typeof e?.message === 'string' && e.message.includes(expected.named) ? expected.named : e?.message
  if (expected.at !== undefined) {
    const loc = e?.locations?.[0]
    const pointed = loc?.line === 1 ? (c.query ?? '').slice(loc.column - 1, loc.column - 1 + 40) : undefined
    actual.at = pointed?.startsWith(expected.at) ? expected.at : `${JSON.stringify(loc)} → ${JSON.stringify(pointed)}: ${e?.message}`
  }
  if (expected.limit !== undefined) actual.limit = e?.extensions?.limit
  if (expected.status !== undefined) actual.status = res.status
  return actual
}

/** The row of job `id` as Postgres holds it, next to `data` and `tag` normalized by Postgres the same way. */
async function storedRow(id: string, data: unknown, tag: string | null) {
  const [row] = await sql`SELECT data::text AS got, (${sql.json(data as postgres.JSONValue)}::jsonb)::text AS want, tag FROM worker_jobs WHERE id = ${id}`
  expect(row).toBeDefined()
  expect({ data: row!.got, tag: row!.tag }).toEqual({ data: row!.want, tag })
}

function idsOf(res: Answer): string[] {
  const d = res.body?.data
  if (!d) return []
  return Object.values(d).flatMap((v: any) => (Array.isArray(v) ? v.map((j) => j?.id) : [v?.id])).filter((id): id is string => typeof id === 'string')
}

beforeAll(
  async () => {
    db = await createTestDatabase('hostile')
    server = await startServerProcess({
      DATABASE_URL: db.url,
      WORKER_COUNT: '1',
      CRON_REMOVE_OLD_WORKER_JOBS: 'off',
      SUBMIT_BATCH_MAX: String(SUBMIT_BATCH_MAX),
      ADMIN_SUBMIT_BATCH_MAX: String(ADMIN_SUBMIT_BATCH_MAX),
      HTTP_MAX_BODY_BYTES: String(HTTP_MAX_BODY_BYTES),
      // The table submits a few hundred jobs as one user; the rate limit is not what it tests.
      SUBMIT_RATE_PER_MINUTE: '100000',
    })
    sql = postgres(db.url, { max: 2, onnotice: () => {} })
    const wallet = newWallet()
    const user = await signIn(server.url, wallet)
    ctx = { url: server.url, user, wallet }
    rssBefore = rssOf(server.proc.pid)
    errorLogsBefore = server.logs.filter((l) => l.level >= 50).length
  },
  { timeout: 30_000 },
)

afterAll(async () => {
  await server?.stop()
  await sql?.end()
  await db?.drop()
})

describe('hostile inputs', () => {
  test(`the table has at least 150 cases (${cases.length})`, () => {
    expect(cases.length).toBeGreaterThanOrEqual(150)
    expect(new Set(cases.map((c) => `${c.category}: ${c.name}`)).size).toBe(cases.length)
  })

  for (const c of cases) {
    test(`${c.category}: ${c.name}`, async () => {
      const res = await send(c)
      expect(res.status).toBeLessThan(500)
      expect(res.body?.errors?.map((e: any) => e?.extensions?.code) ?? []).not.toContain('INTERNAL_SERVER_ERROR')
      const exp = c.expect
      if ('stored' in exp) {
        expect(res.body?.errors).toBeUndefined()
        const ids = idsOf(res)
        expect(ids).toHaveLength(1)
        storedIds.push(...ids)
        await storedRow(ids[0]!, exp.stored.data, exp.stored.tag ?? null)
      } else if ('storedOrRefused' in exp) {
        if (res.body?.errors) {
          expect(refusalOf(exp.storedOrRefused.refusal, c, res)).toEqual(exp.storedOrRefused.refusal)
          expect(idsOf(res)).toEqual([])
        } else {
          const ids = idsOf(res)
          storedIds.push(...ids)
          // The last job of the request is the one with the key (a batch's item 0 is plain).
          await storedRow(ids.at(-1)!, exp.storedOrRefused.data, null)
          const [row] = await sql`SELECT data ? '__proto__' AS kept FROM worker_jobs WHERE id = ${ids.at(-1)!}`
          expect(row!.kept).toBe(true)
        }
      } else if ('returns' in exp) {
        expect(res.body?.errors).toBeUndefined()
        expect(res.body?.data).toEqual(exp.returns)
      } else {
        expect(refusalOf(exp, c, res)).toEqual(exp)
        // A refusal returns nothing: no job, no token.
        expect(Object.values(res.body?.data ?? {}).filter((v) => v !== null)).toEqual([])
      }
    })
  }
})

describe('afterwards', () => {
  test('no stray rows: worker_jobs holds exactly the rows the stored cases wrote; no user, nonce or notification more', async () => {
    const storedCases = cases.filter((c) => 'stored' in c.expect).length
    expect(storedIds.length).toBeGreaterThanOrEqual(storedCases)
    const rows = await sql`SELECT id FROM worker_jobs ORDER BY id`
    expect(rows.map((r) => String(r.id))).toEqual([...storedIds].sort((a, b) => Number(a) - Number(b)))
    expect((await sql`SELECT count(*)::int AS n FROM users`)[0]!.n).toBe(1)
    expect((await sql`SELECT count(*)::int AS n FROM notifications`)[0]!.n).toBe(0)
    expect((await sql`SELECT count(*)::int AS n FROM auth_nonces`)[0]!.n).toBe(unusedNonces)
  })

  test('no connection is left in a transaction', async () => {
    // A live transaction of the worker may be caught between two statements: a leaked one never ends.
    await waitFor(
      async () =>
        (await sql`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = ${db.name} AND state LIKE 'idle in transaction%'`)[0]!.n === 0,
      { timeoutMs: 5_000, what: 'no connection idle in transaction' },
    )
  })

  test('GET /health is 200', async () => {
    const res = await fetch(`${server.url}/health`)
    expect(res.status).toBe(200)
  })

  test('the server logged no unexpected error', () => {
    const errors = server.logs.filter((l) => l.level >= 50).slice(errorLogsBefore)
    expect(errors.map((l) => String(l.msg ?? l.err?.message).slice(0, 200))).toEqual([])
  })

  test('the main process RSS is back within 50 MB of where it started', () => {
    const after = rssOf(server.proc.pid)
    console.log(`server RSS: ${(rssBefore / 2 ** 20).toFixed(1)} MiB before the table, ${(after / 2 ** 20).toFixed(1)} MiB after`)
    expect(after - rssBefore).toBeLessThan(RSS_SLACK_BYTES)
  })
})
