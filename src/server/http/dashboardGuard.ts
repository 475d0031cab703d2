import { CSRF_HEADER, cookieValue, DASHBOARD_COOKIE, isSameOrigin } from '../auth/dashboardSession'
import { jsonError } from './guards'

/**
 * 403 for a POST to /graphql that carries the dashboard's session cookie from another origin and looks
 * like the dashboard's (its CSRF header) or like a form (any body but JSON): a cross-site form POST with
 * the cookie is refused as such, before the content-type rule would answer 415. The cookie would not hold
 * there anyway (auth/callers.ts checks the origin); a cross-origin JSON request without the CSRF header
 * (an application page on a sibling origin signing in) goes on as anonymous, as if it had no cookie.
 */
export function refuseCrossSiteCookie(request: Request, origin: string): Response | null {
  if (request.method !== 'POST' || request.headers.has('authorization')) return null
  if (cookieValue(request.headers.get('cookie'), DASHBOARD_COOKIE) === null || isSameOrigin(request, origin)) return null
  const json = (request.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase() === 'application/json'
  if (json && !request.headers.has(CSRF_HEADER)) return null
  return jsonError(403, 'FORBIDDEN', "the dashboard's session cookie is accepted from the dashboard's own origin only")
}
