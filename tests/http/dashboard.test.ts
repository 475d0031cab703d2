import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import postgres from 'postgres'
import { newWallet, signIn } from '../helpers/auth'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type ServerProcess, startServerProcess, TEST_ENV } from '../helpers/server'
import { gql } from './client'

/**
 * The admin dashboard's access over real HTTP against the real server: the login (API token, SIWE),
 * the cookie's attributes, CSRF and origin rules on /graphql, logout, the page's security headers, and
 * the GraphQL fields the page added (finishedPerMinute, jobChain, DUE_FIRST/DUE_LAST).
 */

let db: TestDatabase
let server: ServerProcess
let sql: postgres.Sql
let origin: string
const adminWallet = newWallet()
const LOGIN_RATE = 40

beforeAll(
  async () => {
    db = await createTestDatabase('dashboard_http')
    server = await startServerProcess({
      DATABASE_URL: db.url,
      WORKER_COUNT: '0',
      CRON_REMOVE_OLD_WORKER_JOBS: 'off',
      ADMIN_WALLETS: adminWallet.address,
      DASHBOARD_LOGIN_RATE_PER_MINUTE: String(LOGIN_RATE),
    })
    origin = new URL(server.url).origin
    sql = postgres(db.url, { max: 2, onnotice: () => {} })
  },
  { timeout: 30_000 },
)

afterAll(async () => {
  await server?.stop()
  await sql?.end()
  await db?.drop()
})

type Session = { cookie: string; csrf: string }

/** POST /dashboard/login as the page's own origin would; returns the response. */
function login(body: Record<string, string>, headers: Record<string, string> = {}) {
  return fetch(`${server.url}/dashboard/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', origin, ...headers },
    body: JSON.stringify(body),
    redirect: 'manual',
  })
}

/** The Set-Cookie lines of a response. */
const setCookies = (res: Response) => res.headers.getSetCookie()

async function loginWithToken(): Promise<Session> {
  const res = await login({ token: TEST_ENV.ADMIN_API_TOKEN })
  expect(res.status).toBe(200)
  const body = (await res.json()) as { csrfToken: string }
  const value = /^dashboard_session=([^;]+)/.exec(setCookies(res)[0]!)![1]!
  return { cookie: `dashboard_session=${value}`, csrf: body.csrfToken }
}

/** A GraphQL POST with the dashboard's cookie; CSRF header and Origin as given. */
async function cookieGql(
  query: string,
  opts: { session?: Session; csrf?: string | null; origin?: string | null; headers?: Record<string, string>; variables?: Record<string, unknown> } = {},
) {
  const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json', ...opts.headers }
  if (opts.session) headers.cookie = opts.session.cookie
  const csrf = opts.csrf === undefined ? opts.session?.csrf : opts.csrf
  if (csrf) headers['x-csrf-token'] = csrf
  const o = opts.origin === undefined ? origin : opts.origin
  if (o) headers.origin = o
  const res = await fetch(`${server.url}/graphql`, { method: 'POST', headers, body: JSON.stringify({ query, variables: opts.variables }) })
  const body = (await res.json()) as { data?: any; errors?: { message: string; extensions?: Record<string, any> }[] }
  return { status: res.status, ...body }
}

const STATUS = `{ workerStatus { counts { type status count } } }`
const code = (r: { errors?: { extensions?: Record<string, any> }[] }) => r.errors?.[0]?.extensions?.code

describe('the page', () => {
  test('GET /dashboard without a session is the login form, with the security headers and no inline script', async () => {
    const res = await fetch(`${server.url}/dashboard`)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toContain('text/html')
    const csp = res.headers.get('content-security-policy')!
    expect(csp).toContain("default-src 'self'")
    expect(csp).toContain("script-src 'self'")
    expect(csp).toContain("frame-ancestors 'none'")
    expect(csp).not.toContain('unsafe-inline')
    expect(res.headers.get('x-frame-options')).toBe('DENY')
    expect(res.headers.get('cache-control')).toBe('no-store')
    expect(res.headers.get('x-content-type-options')).toBe('nosniff')
    expect(res.headers.get('referrer-policy')).toBe('no-referrer')
    const html = await res.text()
    expect(html).toContain('action="/dashboard/login"')
    expect(html).not.toContain('csrf-token')
    // Every script is a file of its own.
    for (const m of html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)) {
      expect(m[1]).toContain('src=')
      expect(m[2]!.trim()).toBe('')
    }
  })

  test('the script and the stylesheet are served with their types and the same headers', async () => {
    const js = await fetch(`${server.url}/dashboard/dashboard.js`)
    expect(js.status).toBe(200)
    expect(js.headers.get('content-type')).toContain('text/javascript')
    expect(js.headers.get('x-content-type-options')).toBe('nosniff')
    const text = await js.text()
    expect(text).toContain('textContent')
    expect(text).not.toContain('.innerHTML')
    const css = await fetch(`${server.url}/dashboard/dashboard.css`)
    expect(css.headers.get('content-type')).toContain('text/css')
  })
})

describe('without a session', () => {
  test("the page's data and actions are 401", async () => {
    const data = await cookieGql(STATUS, { csrf: 'no-session-at-all' })
    expect(data.status).toBe(401)
    expect(code(data)).toBe('UNAUTHENTICATED')
    const action = await cookieGql('mutation { cancelJob(id: "1") { status } }', { csrf: 'x' })
    expect(action.status).toBe(401)
    // Without the page's header it is a plain anonymous GraphQL request.
    const plain = await cookieGql(STATUS)
    expect(code(plain)).toBe('UNAUTHENTICATED')
    expect(plain.data).toBeNull()
  })
})

describe('login with ADMIN_API_TOKEN', () => {
  test('a wrong token is refused and sets no cookie (JSON: 401; form: back to the page with the reason)', async () => {
    const res = await login({ token: 'not-the-token-0123456789abcdef0123456789' })
    expect(res.status).toBe(401)
    expect(setCookies(res)).toEqual([])
    const form = await fetch(`${server.url}/dashboard/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin },
      body: 'token=wrong',
      redirect: 'manual',
    })
    expect(form.status).toBe(303)
    expect(form.headers.get('location')).toBe('/dashboard?login=refused')
    expect(setCookies(form)).toEqual([])
    const page = await (await fetch(`${server.url}/dashboard?login=refused`)).text()
    expect(page).toContain('That token is not valid.')
  })

  test('the right token sets an HttpOnly, SameSite=Strict session cookie for /dashboard and /graphql only, never the token', async () => {
    const res = await login({ token: TEST_ENV.ADMIN_API_TOKEN })
    expect(res.status).toBe(200)
    const cookies = setCookies(res)
    expect(cookies).toHaveLength(2)
    const paths = cookies.map((c) => /Path=([^;]+)/.exec(c)?.[1]).sort()
    expect(paths).toEqual(['/dashboard', '/graphql'])
    for (const c of cookies) {
      expect(c).toStartWith('dashboard_session=')
      expect(c).toContain('HttpOnly')
      expect(c).toContain('SameSite=Strict')
      expect(c).toMatch(/Max-Age=\d+/)
      // http://: not Secure (it would never be sent back); with an https BASE_URL it is.
      expect(c).not.toContain('Secure')
      expect(c).not.toContain(TEST_ENV.ADMIN_API_TOKEN)
    }
    const { csrfToken } = (await res.json()) as { csrfToken: string }
    expect(csrfToken.length).toBeGreaterThan(20)
  })

  test('a form login redirects to the page, which hands it the CSRF token', async () => {
    const res = await fetch(`${server.url}/dashboard/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin },
      body: new URLSearchParams({ token: TEST_ENV.ADMIN_API_TOKEN }).toString(),
      redirect: 'manual',
    })
    expect(res.status).toBe(303)
    expect(res.headers.get('location')).toBe('/dashboard')
    const cookie = /^dashboard_session=[^;]+/.exec(setCookies(res)[0]!)![0]
    const page = await fetch(`${server.url}/dashboard`, { headers: { cookie } })
    const html = await page.text()
    const csrf = /<meta name="csrf-token" content="([^"]+)">/.exec(html)?.[1]
    expect(csrf).toBeDefined()
    expect(html).toContain('admin API token')
    const r = await cookieGql(STATUS, { session: { cookie, csrf: csrf! } })
    expect(r.status).toBe(200)
    expect(r.errors).toBeUndefined()
  })

  test('a login from another origin is refused', async () => {
    const res = await login({ token: TEST_ENV.ADMIN_API_TOKEN }, { origin: 'https://evil.example' })
    expect(res.status).toBe(403)
    expect(setCookies(res)).toEqual([])
    const site = await login({ token: TEST_ENV.ADMIN_API_TOKEN }, { 'sec-fetch-site': 'cross-site' })
    expect(site.status).toBe(403)
  })
})

describe('the cookie on /graphql', () => {
  let session: Session
  beforeAll(async () => {
    session = await loginWithToken()
  })

  test('with its CSRF header, from the same origin, it is an admin', async () => {
    const r = await cookieGql(STATUS, { session })
    expect(r.status).toBe(200)
    expect(r.errors).toBeUndefined()
    expect(Array.isArray(r.data.workerStatus.counts)).toBe(true)
    // Sec-Fetch-Site alone (no Origin) is enough too.
    const bySite = await cookieGql(STATUS, { session, origin: null, headers: { 'sec-fetch-site': 'same-origin' } })
    expect(bySite.errors).toBeUndefined()
  })

  test('without the CSRF header it is anonymous; with a wrong one, 401', async () => {
    const none = await cookieGql(STATUS, { session, csrf: null })
    expect(code(none)).toBe('UNAUTHENTICATED')
    expect(none.data).toBeNull()
    const wrong = await cookieGql(STATUS, { session, csrf: `${session.csrf.slice(0, -2)}xx` })
    expect(wrong.status).toBe(401)
    // Another session's CSRF token does not fit this one.
    const other = await loginWithToken()
    const crossed = await cookieGql(STATUS, { session: { cookie: session.cookie, csrf: other.csrf } })
    expect(crossed.status).toBe(401)
  })

  test('from another origin it is refused, even with the CSRF header; a cross-site form POST too', async () => {
    const evil = await cookieGql(STATUS, { session, origin: 'https://evil.example' })
    expect(evil.status).toBe(403)
    const site = await cookieGql(STATUS, { session, origin: null, headers: { 'sec-fetch-site': 'same-site' } })
    expect(site.status).toBe(403)
    const noOrigin = await cookieGql(STATUS, { session, origin: null })
    expect(noOrigin.status).toBe(403)
    const pending = (await sql`INSERT INTO worker_jobs (type, user_id, due) VALUES ('noop', 0, now() + interval '1 day') RETURNING id`)[0]!.id
    const form = await fetch(`${server.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: session.cookie, origin: 'https://evil.example' },
      body: new URLSearchParams({ query: `mutation { cancelJob(id: "${pending}") { status } }` }).toString(),
    })
    expect(form.status).toBe(403)
    expect((await sql`SELECT cancelled_at FROM worker_jobs WHERE id = ${pending}`)[0]!.cancelled_at).toBeNull()
  })

  test('over GET it is never accepted', async () => {
    const q = new URLSearchParams({ query: STATUS })
    const get = await fetch(`${server.url}/graphql?${q}`, { headers: { accept: 'application/json', cookie: session.cookie, 'x-csrf-token': session.csrf, origin } })
    expect(get.status).toBe(401)
    const m = new URLSearchParams({ query: 'mutation { cancelJob(id: "1") { status } }' })
    const mutation = await fetch(`${server.url}/graphql?${m}`, { headers: { accept: 'application/json', cookie: session.cookie, origin } })
    expect(mutation.status).toBe(405)
  })

  test('a dashboard session is no Bearer token, and a Bearer token is no cookie', async () => {
    const jwt = session.cookie.slice('dashboard_session='.length)
    const asBearer = await gql(server.url, STATUS, undefined, { token: jwt })
    expect(code(asBearer)).toBe('UNAUTHENTICATED')
    const user = await signIn(server.url, newWallet())
    const asCookie = await cookieGql(STATUS, { session: { cookie: `dashboard_session=${user.token}`, csrf: session.csrf } })
    expect(asCookie.status).toBe(401)
  })

  test('Bearer wins over the cookie: a user with the admin cookie beside their token is still that user', async () => {
    const user = await signIn(server.url, newWallet())
    const r = await cookieGql(STATUS, { session, headers: { authorization: `Bearer ${user.token}` } })
    expect(code(r)).toBe('FORBIDDEN')
  })
})

describe('login with a SIWE session', () => {
  test("a non-admin wallet's session cannot get the cookie; an invalid one neither", async () => {
    const user = await signIn(server.url, newWallet())
    expect(user.isAdmin).toBe(false)
    const res = await login({ sessionToken: user.token })
    expect(res.status).toBe(403)
    expect(setCookies(res)).toEqual([])
    const bad = await login({ sessionToken: `${user.token.slice(0, -4)}AAAA` })
    expect(bad.status).toBe(401)
  })

  test("an admin wallet's session gets a cookie that acts as that admin", async () => {
    const admin = await signIn(server.url, adminWallet)
    expect(admin.isAdmin).toBe(true)
    const res = await login({ sessionToken: admin.token })
    expect(res.status).toBe(200)
    const { csrfToken } = (await res.json()) as { csrfToken: string }
    const cookie = /^dashboard_session=[^;]+/.exec(setCookies(res)[0]!)![0]
    const page = await (await fetch(`${server.url}/dashboard`, { headers: { cookie } })).text()
    expect(page).toContain(`admin user ${admin.userId}`)
    const r = await cookieGql(STATUS, { session: { cookie, csrf: csrfToken } })
    expect(r.errors).toBeUndefined()
  })
})

describe('logout', () => {
  test('clears both cookies; a stale cookie shows the login form again', async () => {
    const session = await loginWithToken()
    const res = await fetch(`${server.url}/dashboard/logout`, { method: 'POST', headers: { origin, cookie: session.cookie }, redirect: 'manual' })
    expect(res.status).toBe(303)
    const cleared = setCookies(res)
    expect(cleared.map((c) => /Path=([^;]+)/.exec(c)?.[1]).sort()).toEqual(['/dashboard', '/graphql'])
    for (const c of cleared) {
      expect(c).toStartWith('dashboard_session=;')
      expect(c).toContain('Max-Age=0')
    }
    const page = await (await fetch(`${server.url}/dashboard`)).text()
    expect(page).toContain('action="/dashboard/login"')
    // A bad cookie is not a session: the page asks to sign in and clears it.
    const stale = await fetch(`${server.url}/dashboard`, { headers: { cookie: 'dashboard_session=garbage' } })
    expect(await stale.text()).toContain('Your session has ended')
    expect(setCookies(stale).every((c) => c.includes('Max-Age=0'))).toBe(true)
    const evil = await fetch(`${server.url}/dashboard/logout`, { method: 'POST', headers: { origin: 'https://evil.example' } })
    expect(evil.status).toBe(403)
  })
})

describe('the GraphQL fields the dashboard uses', () => {
  let session: Session
  beforeAll(async () => {
    session = await loginWithToken()
  })

  test('finishedPerMinute counts the outcomes of each minute, zero-filled, cancelled ones left out', async () => {
    await sql`INSERT INTO worker_jobs (type, user_id, started, finished, success)
      VALUES ('fpm', 0, now() - interval '5 minutes', now() - interval '5 minutes', true),
             ('fpm', 0, now() - interval '5 minutes', now() - interval '5 minutes', true),
             ('fpm', 0, now() - interval '5 minutes', now() - interval '5 minutes', false),
             ('fpm', 0, now() - interval '2 hours', now() - interval '2 hours', false)`
    await sql`INSERT INTO worker_jobs (type, user_id, finished, success, cancelled_at) VALUES ('fpm', 0, now() - interval '5 minutes', false, now())`
    const r = await cookieGql('{ finishedPerMinute(minutes: 10) { minute succeeded failed } }', { session })
    expect(r.errors).toBeUndefined()
    const buckets = r.data.finishedPerMinute as { minute: string; succeeded: number; failed: number }[]
    expect(buckets).toHaveLength(10)
    const [dbMinute] = await sql`SELECT date_trunc('minute', now() - interval '5 minutes') AS m`
    const five = buckets.find((b) => new Date(b.minute).getTime() === new Date(dbMinute!.m).getTime())!
    expect(five).toEqual({ minute: expect.any(String), succeeded: 2, failed: 1 })
    expect(buckets.reduce((n, b) => n + b.succeeded + b.failed, 0)).toBe(3)
    // Minutes in order, one apart.
    for (let i = 1; i < buckets.length; i++) expect(new Date(buckets[i]!.minute).getTime() - new Date(buckets[i - 1]!.minute).getTime()).toBe(60_000)
  })

  test('finishedPerMinute is for admins only', async () => {
    const user = await signIn(server.url, newWallet())
    const r = await gql(server.url, '{ finishedPerMinute { minute } }', undefined, { token: user.token })
    expect(code(r)).toBe('FORBIDDEN')
  })

  test('jobChain follows rescheduled_from_job both ways', async () => {
    const [a] = await sql`INSERT INTO worker_jobs (type, user_id, finished, success) VALUES ('chain', 0, now(), false) RETURNING id`
    const [b] = await sql`INSERT INTO worker_jobs (type, user_id, finished, success, rescheduled_from_job, attempt) VALUES ('chain', 0, now(), false, ${a!.id}, 2) RETURNING id`
    const [c] = await sql`INSERT INTO worker_jobs (type, user_id, rescheduled_from_job, attempt) VALUES ('chain', 0, ${b!.id}, 3) RETURNING id`
    const [d] = await sql`INSERT INTO worker_jobs (type, user_id, rescheduled_from_job) VALUES ('chain', 0, ${a!.id}) RETURNING id`
    const Q = 'query ($id: ID!, $limit: Int) { jobChain(id: $id, limit: $limit) { job { id } older { id } newer { id } olderTruncated newerTruncated } }'
    const mid = await cookieGql(Q, { session, variables: { id: String(b!.id) } })
    expect(mid.errors).toBeUndefined()
    expect(mid.data.jobChain).toEqual({ job: { id: String(b!.id) }, older: [{ id: String(a!.id) }], newer: [{ id: String(c!.id) }], olderTruncated: false, newerTruncated: false })
    const first = await cookieGql(Q, { session, variables: { id: String(a!.id) } })
    expect(first.data.jobChain.newer.map((j: { id: string }) => j.id)).toEqual([b!.id, c!.id, d!.id].map(String))
    const bounded = await cookieGql(Q, { session, variables: { id: String(a!.id), limit: 1 } })
    expect(bounded.data.jobChain.newer).toHaveLength(1)
    expect(bounded.data.jobChain.newerTruncated).toBe(true)
    const last = await cookieGql(Q, { session, variables: { id: String(c!.id) } })
    expect(last.data.jobChain.older.map((j: { id: string }) => j.id)).toEqual([a!.id, b!.id].map(String))
    const absent = await cookieGql(Q, { session, variables: { id: '999999999' } })
    expect(absent.data.jobChain).toBeNull()
  })

  test('jobs orders by due time with DUE_FIRST and DUE_LAST', async () => {
    await sql`INSERT INTO worker_jobs (type, user_id, due) VALUES ('dueOrder', 0, now() + interval '3 days'), ('dueOrder', 0, now() + interval '1 day'), ('dueOrder', 0, now() + interval '2 days')`
    await sql`INSERT INTO worker_jobs (type, user_id, due, started, finished, success) VALUES ('dueOrder', 0, now() - interval '1 day', now(), now(), true)`
    const Q = 'query ($order: JobOrder) { jobs(filter: { type: "dueOrder" }, order: $order) { items { due } total } }'
    const first = await cookieGql(Q, { session, variables: { order: 'DUE_FIRST' } })
    const dues = first.data.jobs.items.map((j: { due: string }) => new Date(j.due).getTime())
    expect(dues).toHaveLength(4)
    expect(dues).toEqual([...dues].sort((x: number, y: number) => x - y))
    const last = await cookieGql(Q, { session, variables: { order: 'DUE_LAST' } })
    expect(last.data.jobs.items.map((j: { due: string }) => new Date(j.due).getTime())).toEqual([...dues].reverse())
  })

  test.each([
    ['finishedPerMinute(minutes: 0) { minute }', 'minutes'],
    ['finishedPerMinute(minutes: 1441) { minute }', 'minutes'],
    ['jobChain(id: "1", limit: 0) { job { id } }', 'limit'],
    ['jobChain(id: "1", limit: 51) { job { id } }', 'limit'],
    ['jobChain(id: "abc") { job { id } }', 'id'],
  ])('a bad argument is a clear error naming the field: %s', async (field, name) => {
    const r = await cookieGql(`{ ${field} }`, { session })
    expect(code(r)).toBe('BAD_USER_INPUT')
    expect(r.errors![0]!.extensions!.field).toBe(name)
    expect(r.errors![0]!.message).toContain(name)
  })
})

// Last: it uses up this client's login attempts.
describe('login rate limit', () => {
  test('wrong tokens are rate-limited per client, and while limited even the right token is turned away', async () => {
    let limited: Response | null = null
    for (let i = 0; i <= LOGIN_RATE; i++) {
      const res = await login({ token: `wrong-${i}-0123456789abcdef0123456789abcdef` })
      if (res.status === 429) {
        limited = res
        break
      }
      expect(res.status).toBe(401)
    }
    expect(limited).not.toBeNull()
    expect(Number(limited!.headers.get('retry-after'))).toBeGreaterThan(0)
    const right = await login({ token: TEST_ENV.ADMIN_API_TOKEN })
    expect(right.status).toBe(429)
    expect(setCookies(right)).toEqual([])
  })
})
