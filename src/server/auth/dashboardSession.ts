import { createHmac, randomBytes } from 'node:crypto'
import { errors, jwtVerify, SignJWT } from 'jose'
import { tokenMatches } from './callers'

/**
 * The admin dashboard's cookie sessions (http/dashboard.ts hands them out at /dashboard/login).
 *
 * A session is a short-lived HS256 JWT signed with the session secret, like the SIWE sessions, but with
 * its own audience (`<origin>/dashboard`): a dashboard cookie is refused as a Bearer token and a Bearer
 * token is refused as a cookie. It names who signed in, never a credential: the API token's sessions
 * carry an HMAC of the token (so replacing ADMIN_API_TOKEN ends them), a wallet's its user and address
 * (ADMIN_WALLETS is checked again on every request, in callers.ts).
 *
 * The cookie alone never authenticates (double submit): a request must also send the session's CSRF
 * token, an HMAC of its random id, in the X-CSRF-Token header, and come from the server's own origin.
 * The page gets the CSRF token in its HTML; a page on another site can neither read it nor set the header
 * without a CORS preflight, which it never gets.
 */

export const DASHBOARD_COOKIE = 'dashboard_session'
export const CSRF_HEADER = 'x-csrf-token'

const ALG = 'HS256'
const ADDRESS = /^0x[0-9a-f]{40}$/

export type DashboardSubject = { kind: 'apiToken' } | { kind: 'user'; userId: number; address: `0x${string}` }

export interface DashboardSession {
  subject: DashboardSubject
  /** Random, per session: what the CSRF token is bound to. */
  id: string
  expiresAt: Date
  /** The API token's fingerprint at sign-in (apiToken sessions only). */
  tokenFingerprint?: string
}

/** What a request brings for the cookie path: read by dashboardCredentials, checked by the caller resolver. */
export interface DashboardCredentials {
  session: string
  csrfToken: string | null
  sameOrigin: boolean
}

export function createDashboardSessions(opts: { secret: Uint8Array; ttlMs: number; issuer: () => string }) {
  const audience = () => `${opts.issuer()}/dashboard`
  const hmac = (label: string, value: string) => createHmac('sha256', opts.secret).update(`${label}:${value}`).digest('base64url')
  const fingerprint = (apiToken: string) => hmac('dashboard-api-token', apiToken).slice(0, 22)

  return {
    fingerprint,

    /** The session token (the cookie's value), its CSRF token and when it ends (never after `notAfter`). */
    async issue(subject: DashboardSubject, extra: { apiToken?: string; notAfter?: Date } = {}, now = new Date()) {
      let expiresAt = new Date(now.getTime() + opts.ttlMs)
      if (extra.notAfter && extra.notAfter < expiresAt) expiresAt = extra.notAfter
      const id = randomBytes(16).toString('base64url')
      const claims: Record<string, string> =
        subject.kind === 'apiToken' ? { tok: fingerprint(extra.apiToken ?? '') } : { addr: subject.address }
      const token = await new SignJWT(claims)
        .setProtectedHeader({ alg: ALG, typ: 'JWT' })
        .setSubject(subject.kind === 'apiToken' ? 'apiToken' : `user:${subject.userId}`)
        .setJti(id)
        .setIssuer(opts.issuer())
        .setAudience(audience())
        .setIssuedAt(Math.floor(now.getTime() / 1000))
        .setExpirationTime(Math.floor(expiresAt.getTime() / 1000))
        .sign(opts.secret)
      return { token, csrfToken: hmac('dashboard-csrf', id), expiresAt }
    },

    /** The session a cookie carries, or why it is refused (a message safe to show). */
    async verify(token: string): Promise<DashboardSession | string> {
      try {
        const { payload } = await jwtVerify(token, opts.secret, { algorithms: [ALG], issuer: opts.issuer(), audience: audience() })
        const id = payload.jti
        if (typeof id !== 'string' || id.length < 16 || payload.exp === undefined) return 'the dashboard session is malformed'
        const expiresAt = new Date(payload.exp * 1000)
        if (payload.sub === 'apiToken' && typeof payload.tok === 'string') return { subject: { kind: 'apiToken' }, id, expiresAt, tokenFingerprint: payload.tok }
        const m = /^user:([1-9]\d{0,15})$/.exec(payload.sub ?? '')
        const addr = payload.addr
        if (!m || !Number.isSafeInteger(Number(m[1])) || typeof addr !== 'string' || !ADDRESS.test(addr)) return 'the dashboard session is malformed'
        return { subject: { kind: 'user', userId: Number(m[1]), address: addr as `0x${string}` }, id, expiresAt }
      } catch (err) {
        if (err instanceof errors.JWTExpired) return 'the dashboard session has expired: sign in again'
        return 'the dashboard session is invalid'
      }
    },

    /** The CSRF token of a session, as the page gets it. */
    csrfTokenOf: (session: DashboardSession) => hmac('dashboard-csrf', session.id),

    /** Whether `given` is the session's CSRF token (constant time). */
    csrfMatches: (session: DashboardSession, given: string) => tokenMatches(given, hmac('dashboard-csrf', session.id)),
  }
}

export type DashboardSessions = ReturnType<typeof createDashboardSessions>

/** The value of one cookie of a Cookie header (the first of that name), or null. */
export function cookieValue(header: string | null, name: string): string | null {
  if (!header) return null
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq < 0) continue
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim() || null
  }
  return null
}

/**
 * Whether the request comes from the server's own origin: Sec-Fetch-Site, when the browser sends it,
 * must say same-origin, and Origin, when it names one, must be `origin`. A form POST from a page under
 * Referrer-Policy no-referrer (the dashboard's) carries `Origin: null`: then Sec-Fetch-Site, which pages
 * cannot set, is what vouches. A request with neither is not from a browser page of ours (browsers send
 * both on every POST), so it is refused too.
 */
export function isSameOrigin(request: Request, origin: string): boolean {
  const site = request.headers.get('sec-fetch-site')
  if (site !== null && site !== 'same-origin') return false
  const sent = request.headers.get('origin')
  if (sent !== null && sent !== 'null') return sent === origin
  return site === 'same-origin'
}

/**
 * The cookie path's credentials of a /graphql request, or null when it has none. Only a POST may use the
 * cookie: GET carries no CSRF-safe body, and yoga refuses mutations over GET anyway.
 */
export function dashboardCredentials(request: Request, origin: string): DashboardCredentials | null {
  if (request.method !== 'POST') return null
  const session = cookieValue(request.headers.get('cookie'), DASHBOARD_COOKIE)
  if (!session) return null
  return { session, csrfToken: request.headers.get(CSRF_HEADER), sameOrigin: isSameOrigin(request, origin) }
}
