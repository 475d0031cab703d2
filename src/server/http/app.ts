import { Elysia } from 'elysia'
import { createDashboardRoutes } from '../dashboard/routes'
import type { GraphqlExtension } from '../graphql/extend'
import { createGraphQLHandler } from '../graphql/handler'
import type { ServerApp } from '../serverApp'
import type { WorkerManager } from '../workers/manager'
import {
  bodyBackstopBytes,
  createCorsPolicy,
  hasBearer,
  jsonError,
  readBodyCapped,
  refuseDeclaredOversize,
  refuseDeepJsonBody,
  refuseDeepJsonParams,
  refuseNonJsonBody,
} from './guards'
import { refuseCrossSiteCookie } from './dashboardGuard'
import { checkHealth } from './health'
import { createMetrics } from './metrics'

export interface HttpAppOptions {
  /**
   * The URL the server listens on, once it does (boot passes `() => url`). Without BASE_URL its origin is
   * the one CORS allows by default; without this option the Bun server's own URL is used.
   */
  listeningUrl?: () => string | undefined
  /** The application's own GraphQL types and resolvers. */
  graphql?: readonly GraphqlExtension[]
}

/**
 * The HTTP surface. Routes get the ServerApp; none of them runs SQL of its own except through it. Every
 * request goes through the guards of http/guards.ts (CORS, body size and type, JSON nesting); every
 * answer, errors included, is JSON or Prometheus text that names no host, pid or database error.
 */
export function createHttpApp(serverApp: ServerApp, manager: WorkerManager | null, opts: HttpAppOptions = {}) {
  const { config, log } = serverApp
  const graphql = createGraphQLHandler(serverApp, opts.graphql)
  const metrics = createMetrics(serverApp, manager)
  const limit = config.HTTP_MAX_BODY_BYTES
  const listening = () => {
    try {
      return opts.listeningUrl?.()
    } catch {
      return undefined // not listening yet
    }
  }
  const dashboard = createDashboardRoutes(serverApp, graphql.access, { clientAddress: (request) => app.server?.requestIP(request)?.address })
  const cors = createCorsPolicy(config, () => listening() ?? app.server?.url.href)
  const reply = (request: Request, response: Response) => cors.apply(request, response)

  async function graphqlRequest(request: Request): Promise<Response> {
    if (request.method === 'GET' || request.method === 'HEAD') {
      // Yoga itself refuses a mutation over GET (405), so GET only ever reads.
      return refuseDeepJsonParams(new URL(request.url)) ?? graphql.fetch(request)
    }
    const crossSite = refuseCrossSiteCookie(request, serverApp.baseUrl().origin)
    if (crossSite) return crossSite
    const refused = refuseNonJsonBody(request)
    if (refused) return refused
    const body = await readBodyCapped(request, limit)
    if (body instanceof Response) return body
    const deep = refuseDeepJsonBody(body)
    if (deep) return deep
    // Yoga gets the bytes already read, in a request of their own; everything else is the caller's.
    const headers = new Headers(request.headers)
    headers.delete('content-length')
    headers.delete('transfer-encoding')
    // Yoga matches the type case-sensitively; the text is decoded already (JSON is UTF-8).
    headers.set('content-type', 'application/json')
    return graphql.fetch(new Request(request.url, { method: request.method, headers, body, signal: request.signal }))
  }

  const app = new Elysia({
    // The backstop above our own limit, which answers first and in JSON. `development: false`: Bun never
    // renders its error page (with a stack trace) for an error that escapes.
    serve: { maxRequestBodySize: bodyBackstopBytes(limit), development: false },
  })
    .onRequest(({ request }) => {
      // Every OPTIONS is a CORS preflight, answered here: yoga would grant any origin.
      if (request.method === 'OPTIONS') return cors.preflight(request)
      const oversize = refuseDeclaredOversize(request, limit)
      if (oversize) return reply(request, oversize)
    })
    .onError(({ code, error, request }) => {
      if (code === 'NOT_FOUND') return reply(request, jsonError(404, 'NOT_FOUND', 'Not found'))
      if (code === 'PARSE' || code === 'VALIDATION') return reply(request, jsonError(400, 'BAD_REQUEST', 'Bad request'))
      // The message stays in the log: it may hold a host name or a database error.
      log.error({ err: error, path: new URL(request.url).pathname }, 'http: unexpected error')
      return reply(request, jsonError(500, 'INTERNAL_SERVER_ERROR', 'Internal server error'))
    })
    .get('/health', async ({ request }) => {
      const { code, body } = await checkHealth(serverApp, manager)
      return reply(request, Response.json(body, { status: code, headers: { 'cache-control': 'no-store' } }))
    })
    .get('/metrics', async ({ request }) => {
      if (config.METRICS_TOKEN && !hasBearer(request, config.METRICS_TOKEN)) {
        return reply(
          request,
          jsonError(401, 'UNAUTHENTICATED', 'GET /metrics needs Authorization: Bearer <METRICS_TOKEN>', { 'www-authenticate': 'Bearer realm="metrics"' }),
        )
      }
      return reply(request, new Response(await metrics.render(), { headers: { 'content-type': metrics.contentType, 'cache-control': 'no-store' } }))
    })
    // graphql-yoga is a fetch handler: it reads the raw request itself, so Elysia must not parse the body.
    .all('/graphql', async ({ request }) => reply(request, await graphqlRequest(request)), { parse: 'none' })
    // The admin dashboard (src/server/dashboard): a same-origin page, so no CORS headers.
    .get('/dashboard', ({ request }) => dashboard.page(request))
    .get('/dashboard/dashboard.js', () => dashboard.asset('/dashboard/dashboard.js'))
    .get('/dashboard/dashboard.css', () => dashboard.asset('/dashboard/dashboard.css'))
    .post('/dashboard/login', ({ request }) => dashboard.login(request), { parse: 'none' })
    .post('/dashboard/logout', ({ request }) => dashboard.logout(request), { parse: 'none' })
  // Boot calls it on stop, after HTTP stops and before the pool closes: it ends the live subscriptions.
  return Object.assign(app, { closeGraphql: graphql.close })
}
