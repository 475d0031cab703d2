import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { type Caller, callerLabel, tokenMatches } from '../auth/callers'
import { cookieValue, DASHBOARD_COOKIE, type DashboardSessions, type DashboardSubject, isSameOrigin } from '../auth/dashboardSession'
import { createRateLimiter } from '../auth/rateLimit'
import type { Access } from '../graphql/access'
import { readBodyCapped } from '../http/guards'
import type { ServerApp } from '../serverApp'
import { appPage, loginPage } from './page'

/**
 * /dashboard: the admin jobs dashboard. This file serves its shell, its two static files and the cookie
 * session's login and logout; the page reads and acts through POST /graphql only (cookie + X-CSRF-Token,
 * resolved to an admin Caller by auth/callers.ts).
 *
 * - Login (POST /dashboard/login, a form or JSON): `token` = ADMIN_API_TOKEN (constant-time compare), or
 *   `sessionToken` = an admin wallet's SIWE session token. Same origin only, DASHBOARD_LOGIN_RATE_PER_MINUTE
 *   attempts per client address per minute (per server). The cookie holds a short-lived signed session,
 *   never the token: HttpOnly, SameSite=Strict, Secure when BASE_URL is https, and set twice, for
 *   Path=/dashboard (the shell reads it to hand the page its CSRF token) and Path=/graphql, nowhere else.
 * - Logout clears both. Sessions are stateless JWTs: a copied cookie stays valid until it expires
 *   (DASHBOARD_SESSION_TTL_MS, 1 h by default), or until ADMIN_API_TOKEN / ADMIN_WALLETS change.
 * - Every answer carries the security headers below (no inline script: the CSP allows 'self' only).
 */

const ASSETS = {
  '/dashboard/dashboard.js': { file: 'dashboard.js', type: 'text/javascript; charset=utf-8' },
  '/dashboard/dashboard.css': { file: 'dashboard.css', type: 'text/css; charset=utf-8' },
} as const

/** The largest login body read: a token or a session JWT, with room to spare. */
const LOGIN_BODY_MAX = 8192

export const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
}

const withHeaders = (response: Response): Response => {
  for (const [k, v] of Object.entries(SECURITY_HEADERS)) response.headers.set(k, v)
  return response
}
const html = (body: string, status = 200) => withHeaders(new Response(body, { status, headers: { 'content-type': 'text/html; charset=utf-8' } }))
const json = (body: unknown, status = 200, headers: Record<string, string> = {}) => withHeaders(Response.json(body, { status, headers }))
const refusal = (status: number, code: string, message: string, headers: Record<string, string> = {}) =>
  json({ errors: [{ message, extensions: { code } }] }, status, headers)

/** A client address as a rate-limiter key (the limiter keys by number). */
const addressKey = (address: string) => Number.parseInt(createHash('sha256').update(address).digest('hex').slice(0, 12), 16)

type LoginForm = { token?: string; sessionToken?: string }

/** The login body: JSON or a urlencoded form; null when it is neither, or too large. */
async function readLogin(request: Request): Promise<{ form: LoginForm; isForm: boolean } | null> {
  const type = (request.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase()
  const text = await readBodyCapped(request, LOGIN_BODY_MAX)
  if (typeof text !== 'string') return null
  const pick = (v: unknown) => (typeof v === 'string' && v.length > 0 && v.length <= 4096 ? v : undefined)
  if (type === 'application/x-www-form-urlencoded') {
    const p = new URLSearchParams(text)
    return { form: { token: pick(p.get('token')), sessionToken: pick(p.get('sessionToken')) }, isForm: true }
  }
  if (type === 'application/json') {
    try {
      const v = JSON.parse(text) as Record<string, unknown>
      if (v === null || typeof v !== 'object' || Array.isArray(v)) return null
      return { form: { token: pick(v.token), sessionToken: pick(v.sessionToken) }, isForm: false }
    } catch {
      return null
    }
  }
  return null
}

export function createDashboardRoutes(serverApp: ServerApp, access: Access, opts: { clientAddress: (request: Request) => string | undefined }) {
  const { config } = serverApp
  const dashboard: DashboardSessions = access.dashboard
  const dir = import.meta.dir
  const assets = new Map(Object.entries(ASSETS).map(([path, a]) => [path, { body: readFileSync(join(dir, a.file)), type: a.type }]))
  const limiter = createRateLimiter({ perMinute: config.DASHBOARD_LOGIN_RATE_PER_MINUTE })
  const origin = () => serverApp.baseUrl().origin
  const secure = () => serverApp.baseUrl().protocol === 'https:'

  const cookies = (value: string, maxAgeSeconds: number): string[] =>
    ['/dashboard', '/graphql'].map(
      (path) => `${DASHBOARD_COOKIE}=${value}; Path=${path}; Max-Age=${maxAgeSeconds}; HttpOnly; SameSite=Strict${secure() ? '; Secure' : ''}`,
    )
  const setCookies = (response: Response, values: string[]) => {
    for (const c of values) response.headers.append('set-cookie', c)
    return response
  }

  /** The admin a /dashboard request's cookie names (the same rules as /graphql's, through the same resolver). */
  async function sessionOf(request: Request): Promise<{ caller: Caller; csrfToken: string; expiresAt: Date } | null> {
    const value = cookieValue(request.headers.get('cookie'), DASHBOARD_COOKIE)
    if (!value) return null
    const session = await dashboard.verify(value)
    if (typeof session === 'string') return null
    const csrfToken = dashboard.csrfTokenOf(session)
    // A navigation to the shell reads nothing: the origin rule is for the requests that do.
    const caller = await access.callerOf(null, { session: value, csrfToken, sameOrigin: true })
    return caller.kind === 'anonymous' ? null : { caller, csrfToken, expiresAt: session.expiresAt }
  }

  async function page(request: Request): Promise<Response> {
    const signedIn = await sessionOf(request)
    if (signedIn && signedIn.caller.kind !== 'anonymous')
      return html(appPage({ csrfToken: signedIn.csrfToken, who: callerLabel(signedIn.caller), expiresAt: signedIn.expiresAt }))
    const code = new URL(request.url).searchParams.get('login')
    const hadCookie = cookieValue(request.headers.get('cookie'), DASHBOARD_COOKIE) !== null
    const response = html(loginPage(code ?? (hadCookie ? 'expired' : null)))
    // A cookie that no longer holds is cleared, so /graphql stops receiving it.
    return hadCookie ? setCookies(response, cookies('', 0)) : response
  }

  async function login(request: Request): Promise<Response> {
    const isFormPost = (request.headers.get('content-type') ?? '').toLowerCase().startsWith('application/x-www-form-urlencoded')
    const fail = (status: number, code: string, loginCode: string, message: string, headers: Record<string, string> = {}) =>
      isFormPost
        ? withHeaders(new Response(null, { status: 303, headers: { location: `/dashboard?login=${loginCode}`, ...headers } }))
        : refusal(status, code, message, headers)
    if (!isSameOrigin(request, origin())) return fail(403, 'FORBIDDEN', 'origin', 'sign in from the dashboard page itself (same origin only)')
    const taken = limiter.take(addressKey(opts.clientAddress(request) ?? 'unknown'), 1)
    if (!taken.ok) {
      const retry = String(taken.retryAfterSeconds ?? 60)
      return fail(429, 'RATE_LIMITED', 'limited', `too many login attempts: try again in ${retry} s`, { 'retry-after': retry })
    }
    const body = await readLogin(request)
    if (!body) return fail(400, 'BAD_REQUEST', 'refused', 'send token (ADMIN_API_TOKEN) or sessionToken, as JSON or a form, at most 8 KiB')
    const { form } = body

    let subject: DashboardSubject
    let notAfter: Date | undefined
    if (form.token !== undefined) {
      if (!tokenMatches(form.token, config.ADMIN_API_TOKEN)) return fail(401, 'UNAUTHENTICATED', 'refused', 'that token is not valid')
      subject = { kind: 'apiToken' }
    } else if (form.sessionToken !== undefined) {
      const caller = await access.callerOf(`Bearer ${form.sessionToken}`)
      if (caller.kind !== 'user') return fail(401, 'UNAUTHENTICATED', 'refused', 'that session token is not valid')
      if (!caller.isAdmin) return fail(403, 'FORBIDDEN', 'forbidden', 'that wallet is not an admin (ADMIN_WALLETS)')
      const session = await access.sessions.verify(form.sessionToken)
      if (typeof session === 'string') return fail(401, 'UNAUTHENTICATED', 'refused', session)
      subject = { kind: 'user', userId: caller.userId, address: caller.address }
      // Never outlives the wallet's own session.
      notAfter = session.expiresAt
    } else return fail(400, 'BAD_REQUEST', 'refused', 'send token (ADMIN_API_TOKEN) or sessionToken')

    const issued = await dashboard.issue(subject, { apiToken: config.ADMIN_API_TOKEN, notAfter })
    const maxAge = Math.max(0, Math.floor((issued.expiresAt.getTime() - Date.now()) / 1000))
    const response = body.isForm
      ? withHeaders(new Response(null, { status: 303, headers: { location: '/dashboard' } }))
      : json({ ok: true, csrfToken: issued.csrfToken, expiresAt: issued.expiresAt.toISOString() })
    return setCookies(response, cookies(issued.token, maxAge))
  }

  function logout(request: Request): Response {
    if (!isSameOrigin(request, origin())) return refusal(403, 'FORBIDDEN', 'sign out from the dashboard page itself (same origin only)')
    const isForm = !(request.headers.get('content-type') ?? '').toLowerCase().startsWith('application/json')
    const response = isForm ? withHeaders(new Response(null, { status: 303, headers: { location: '/dashboard' } })) : json({ ok: true })
    return setCookies(response, cookies('', 0))
  }

  function asset(path: string): Response {
    const a = assets.get(path)
    if (!a) return refusal(404, 'NOT_FOUND', 'Not found')
    return withHeaders(new Response(a.body, { headers: { 'content-type': a.type } }))
  }

  return { page, login, logout, asset, assetPaths: Object.keys(ASSETS) }
}
