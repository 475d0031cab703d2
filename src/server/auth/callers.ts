import { createHash, timingSafeEqual } from 'node:crypto'
import type { DashboardCredentials, DashboardSessions } from './dashboardSession'
import type { Sessions } from './session'

/**
 * Who is calling. A signed-in wallet is an admin when ADMIN_WALLETS lists it, decided on each request
 * (so removing a wallet from the list takes effect without waiting for its sessions to expire). The
 * API token is an admin with no user of its own.
 */
export type Caller =
  | { kind: 'anonymous'; refused?: string }
  | { kind: 'user'; userId: number; address: `0x${string}`; isAdmin: boolean }
  | { kind: 'apiToken'; isAdmin: true }

export const ANONYMOUS: Caller = { kind: 'anonymous' }

export const isAdmin = (c: Caller): boolean => c.kind !== 'anonymous' && c.isAdmin

export type SignedIn = Exclude<Caller, { kind: 'anonymous' }>

/** Whose rows the caller may see and act on: undefined means anyone's (admins). */
export const ownerOf = (caller: SignedIn): number | undefined => (caller.isAdmin || caller.kind !== 'user' ? undefined : caller.userId)

/** How a caller is named in what it leaves behind (a cancelled job's result). Never a host or a pid. */
export const callerLabel = (caller: SignedIn): string =>
  caller.kind === 'apiToken' ? 'admin API token' : `${caller.isAdmin ? 'admin ' : ''}user ${caller.userId}`

/** Equal-length digests, so neither the token's content nor its length leaks through timing. */
const digest = (v: string) => createHash('sha256').update(v).digest()

export function tokenMatches(given: string, expected: string | undefined): boolean {
  if (!expected) return false
  return timingSafeEqual(digest(given), digest(expected))
}

/** The bearer token of an Authorization header, or null; anything else in the header is a refusal. */
export function bearerToken(header: string | null): string | null | { refused: string } {
  if (header === null || header === '') return null
  const m = /^Bearer ([A-Za-z0-9\-._~+/]+=*)$/.exec(header)
  if (!m || header.length > 4096) return { refused: 'the Authorization header must be "Bearer <token>"' }
  return m[1]!
}

/**
 * Who a request is. `Authorization: Bearer` decides when it is sent, exactly as before the dashboard
 * existed (a cookie beside it is ignored). Otherwise the dashboard's cookie may: only with its CSRF token
 * and from the server's own origin (auth/dashboardSession.ts), and only for an admin; any shortfall is an
 * anonymous caller with the reason.
 */
export function createCallerResolver(opts: {
  sessions: Sessions
  adminWallets: readonly string[]
  apiToken: string | undefined
  dashboard?: DashboardSessions
}) {
  const admins = new Set(opts.adminWallets)
  const refused = (reason: string): Caller => ({ kind: 'anonymous', refused: reason })

  async function dashboardCaller(dashboard: DashboardSessions, c: DashboardCredentials): Promise<Caller> {
    if (!c.sameOrigin) return refused("the dashboard's session cookie is accepted from the dashboard's own origin only")
    const session = await dashboard.verify(c.session)
    if (typeof session === 'string') return refused(session)
    if (c.csrfToken === null || !dashboard.csrfMatches(session, c.csrfToken))
      return refused("the dashboard's session cookie needs the session's X-CSRF-Token header")
    if (session.subject.kind === 'apiToken') {
      // Replacing (or removing) ADMIN_API_TOKEN ends the sessions it opened.
      if (!opts.apiToken || !tokenMatches(session.tokenFingerprint ?? '', dashboard.fingerprint(opts.apiToken)))
        return refused('the dashboard session was opened with an API token that is no longer valid: sign in again')
      return { kind: 'apiToken', isAdmin: true }
    }
    const { userId, address } = session.subject
    if (!admins.has(address)) return refused('this wallet is no longer an admin: sign in again')
    return { kind: 'user', userId, address, isAdmin: true }
  }

  return async function callerOf(authorization: string | null, dashboard: DashboardCredentials | null = null): Promise<Caller> {
    const token = bearerToken(authorization)
    if (token === null) return dashboard && opts.dashboard ? dashboardCaller(opts.dashboard, dashboard) : ANONYMOUS
    if (typeof token !== 'string') return { kind: 'anonymous', refused: token.refused }
    if (tokenMatches(token, opts.apiToken)) return { kind: 'apiToken', isAdmin: true }
    const session = await opts.sessions.verify(token)
    if (typeof session === 'string') return { kind: 'anonymous', refused: session }
    return { kind: 'user', userId: session.userId, address: session.address, isAdmin: admins.has(session.address) }
  }
}

export type CallerResolver = ReturnType<typeof createCallerResolver>
